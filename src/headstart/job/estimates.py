"""What a step will take on this machine, from a short timed pass: a few images through
the backbone (extraction), one optimisation step (fine-tuning), scaled by the number of
images, epochs and members. The estimates are reported through
``Callback.on_estimate`` before the step starts, and a budget chooses from them.

Each timing is measured here and now, so it is this machine's speed at this moment,
other work on it included; nothing is a stored constant but the two allowances named
below (the probes' share, and the ensemble's test pass against its members' timing)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from headstart.data.dataset import ImageDataset

__all__ = ["Timer", "fit_estimate", "format_seconds"]

TIMED_IMAGES = 32  # images in the larger timed extraction pass, one batch
PROBE_SHARE = 0.15  # fitting probes and cross-validating on the features: + this share
# An ensemble's test pass (its joined network over the test images) took 1.9x its
# members' timed extraction in bench/bench_budget.py (the sample, 2m: 60.9 s against
# 31.7 s estimated); until that path is as fast, its estimate is scaled by this.
ENSEMBLE_TEST_FACTOR = 2.0


def format_seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# A timed pass needs the architecture, not its learned values: random weights time the
# same, and never reach for the hub (a scratch run has no pretrained weights to load).
_TIMING_WEIGHTS = "none"


@dataclass
class Timer:
    """Measured seconds per image (extraction) and per optimisation step (fine-tuning),
    for each (backbone, size, layers) timed once and reused."""

    train: ImageDataset
    weights: str
    device: str
    per_image: dict[tuple, float] = field(default_factory=dict)
    per_step: dict[tuple, float] = field(default_factory=dict)
    natives: dict[str, int] = field(default_factory=dict)

    def native(self, backbone: str) -> int:
        if backbone not in self.natives:
            from headstart.backbones.registry import create_backbone

            model = create_backbone(backbone, _TIMING_WEIGHTS)
            self.natives[backbone] = model.preprocessing.input_size[1]
        return self.natives[backbone]

    def extraction(self, backbone: str, size: int, layers: tuple[str, ...]) -> float:
        """Seconds per image through the frozen ``backbone`` at ``size``, timed."""
        key = (backbone, size, tuple(layers))
        if key not in self.per_image:
            from headstart.backbones.registry import create_backbone
            from headstart.features.extract import extract_features

            model = create_backbone(backbone, _TIMING_WEIGHTS, image_size=size)
            n = min(TIMED_IMAGES, len(self.train))
            run = {"layers": layers, "device": self.device, "batch_size": n}
            extract_features(model, self.train.subset([0]), **run)  # warm-up

            def timed(count: int) -> float:
                started = time.perf_counter()
                extract_features(model, self.train.subset(list(range(count))), **run)
                return time.perf_counter() - started

            # Each pass has a fixed cost (the fast path's set-up) that a whole run pays
            # once: the difference of a 2-image and an n-image pass is the per-image cost.
            small, large = timed(2), timed(n)
            each = (large - small) / (n - 2) if n > 2 else large / n
            self.per_image[key] = each if each > 0 else large / n
        return self.per_image[key]

    def training_step(self, backbone: str, size: int, batch: int) -> float:
        """Seconds of one optimisation step (forward and backward) of ``batch`` images
        through ``backbone`` at ``size``, timed after a warm-up step of the same shape
        (random pixels: the arithmetic is the same; a smaller batch is not a guide on a
        CPU, where a step's fixed cost dominates)."""
        key = (backbone, size, batch)
        if key not in self.per_step:
            import torch

            from headstart.backbones.registry import create_backbone

            model = create_backbone(backbone, _TIMING_WEIGHTS, image_size=size).model.train()
            inputs = torch.randn(batch, 3, size, size)
            model(inputs).float().sum().backward()  # warm-up
            started = time.perf_counter()
            model(inputs).float().sum().backward()
            self.per_step[key] = time.perf_counter() - started
        return self.per_step[key]


def extraction_seconds(timer: Timer, member: tuple, images: int) -> tuple[float, str]:
    backbone, size, layers = member
    each = timer.extraction(backbone, size, layers)
    basis = f"{images} images x {each * 1000:.0f} ms ({backbone} {size} px, timed)"
    return images * each, basis


def fit_estimate(
    timer: Timer, strategy: str, backbone: str, size: int, config: Any, n_test: int
) -> dict[str, tuple[float, str]]:
    """{step: (seconds, basis)} for fitting one model and scoring its test images."""
    n = len(timer.train)
    layers = tuple(config.layers)
    steps: dict[str, tuple[float, str]] = {}
    if strategy == "fine-tune":
        held = int(n * config.validation_fraction)
        if config.lp_ft:
            seconds, basis = extraction_seconds(timer, (backbone, size, layers), n - held)
            steps["linear probe"] = (seconds * (1 + PROBE_SHARE), basis)
        step = timer.training_step(backbone, size, min(config.batch_size, n - held))
        batches = -(-(n - held) // config.batch_size)
        forward = timer.extraction(backbone, size, ("final",))
        epoch = batches * step + held * forward
        steps["fine-tune"] = (
            config.epochs * epoch,
            f"{config.epochs} epochs x ({batches} steps x {step:.2f}s + {held} validation "
            f"images), {backbone} {size} px, one step timed",
        )
    elif strategy in ("feature-extraction", "semi-supervised"):
        seconds, basis = extraction_seconds(timer, (backbone, size, layers), n)
        steps["extraction"] = (seconds * (1 + PROBE_SHARE), basis + f", + {PROBE_SHARE:.0%} probe")
    else:  # scratch: every epoch a training pass, no pretrained features
        step = timer.training_step(backbone, size, min(config.batch_size, n))
        batches = -(-n // config.batch_size)
        steps["training"] = (
            config.epochs * batches * step,
            f"{config.epochs} epochs x {batches} steps x {step:.2f}s, one step timed",
        )
    seconds, basis = extraction_seconds(timer, (backbone, size, ("final",)), n_test)
    steps["test pass"] = (seconds, basis)
    return steps


def ensemble_estimate(
    timer: Timer, members: list[tuple], n_test: int
) -> dict[str, tuple[float, str]]:
    """{step: (seconds, basis)} for fitting ``members`` (backbone, size, layers) as an
    ensemble and scoring the test images through every one of them."""
    n = len(timer.train)
    fit = sum(timer.extraction(*m) for m in members) * n * (1 + PROBE_SHARE)
    test = sum(timer.extraction(*m) for m in members) * n_test * ENSEMBLE_TEST_FACTOR
    names = ", ".join(f"{b} {s} px" for b, s, _ in members)
    return {
        "ensemble": (fit, f"{n} images through {names}, each timed, + {PROBE_SHARE:.0%} probes"),
        "test pass": (
            test,
            f"{n_test} images through {len(members)} members, each timed, "
            f"x {ENSEMBLE_TEST_FACTOR} (the joined network's measured overhead)",
        ),
    }
