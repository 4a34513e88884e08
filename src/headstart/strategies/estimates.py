"""What a step will take on this machine, from a short timed pass: a few images through
the backbone (extraction), one optimisation step (fine-tuning), scaled by the number of
images, epochs and members. The estimates are reported through
``Callback.on_estimate`` before the step starts, and a budget chooses from them.

Each timing is measured here and now, so it is this machine's speed at this moment,
other work on it included; nothing is a stored constant but the allowances named
below (the probes' shares, a single probe's and an ensemble's).
For a budget every pass is timed twice and the slower kept (``Timer.timings``): on a
shared machine one short pass moved 2-9x between runs minutes apart (docs/BENCHMARKS.md
section 15), and an estimate that errs long skips an option, where one that errs short
runs past the budget. A pass whose first timing already puts its option past the budget
(``Timer.ceiling``) is not timed again: a second timing could only make it slower.

Here, below the job and the comparison, so that both ``TrainingJob(budget=)`` and
``compare(budget=)`` estimate the same way."""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError, literal

__all__ = [
    "ENSEMBLE_PROBE_SHARE",
    "PROBE_SHARE",
    "Timer",
    "fit_estimate",
    "format_seconds",
    "parse_budget",
]

TIMED_IMAGES = 32  # images in the larger timed extraction pass, one batch
RETIMED_IMAGES = 128  # the pass timed when 32 images' cost is lost in the set-up's jitter
PROBE_SHARE = 0.15  # fitting probes and cross-validating on the features: + this share
# An ensemble's probes: each member's and the concatenation's, 5-fold cross-validated to
# choose how to combine, then fitted, on features up to ~9,000 wide per member. With 0.15
# its fit took 1.7x its estimate in bench/bench_budget.py (the sample, 2m, 4 members: 75
# against 44 s; Fashion-MNIST k=100, 15m, 4 members: 74 against 44 s), so the probes
# were put at as much as the extraction (1.0). The fused fast path (BENCHMARKS 20) made
# the extraction about twice as fast but not the probes: at 1.0 the fits of five and
# six members took 1.4-1.5x their estimates (BENCHMARKS 15e; Fashion-MNIST 5m ended 13 %
# over), so the probes now cost about twice the extraction: + this share.
ENSEMBLE_PROBE_SHARE = 2.0
BUDGET_TIMINGS = 2  # under a budget each pass is timed this many times, the slowest kept
_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_budget(value: Any) -> float:
    """Seconds in ``value``: "90s", "10m", "1h", "1.5h" or plain seconds (number or
    string); a ConfigError naming {budget} for anything else."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|)\s*", str(value).lower())
        seconds = float(match[1]) * _UNITS[match[2]] if match else -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        got = literal(str(value))
        raise ConfigError(
            f"{{budget}} takes a time: 90s, 10m, 1h or plain seconds. Got {got}.",
            names_in_message=True,
        )
    return seconds


def format_seconds(seconds: float) -> str:
    if seconds == math.inf:
        return "not timed"
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
    timings: int = 1  # each pass timed this many times, the slowest kept
    ceiling: float | None = None  # seconds (the budget): past it, one timing is enough
    # time.monotonic() past which an option (``option()``) not yet timed is not timed at
    # all (its new passes: inf, "not timed"); the first is, so something has an estimate
    give_up_at: float | None = None
    _skipping: bool = False
    per_image: dict[tuple, float] = field(default_factory=dict)
    setup: dict[tuple, float] = field(default_factory=dict)  # a pass's fixed seconds
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
        if key not in self.per_image and self._given_up():
            return math.inf
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
            # Timed ``timings`` times, the slowest kept (see the module's docstring).
            slowest, setup = 0.0, 0.0
            for _ in range(self.timings):
                small, count = timed(2), n
                large = timed(count)
                each = _per_image(small, 2, large, count)
                if each is None and min(RETIMED_IMAGES, len(self.train)) > n:
                    count = min(RETIMED_IMAGES, len(self.train))  # within the jitter: more
                    large = timed(count)
                    each = _per_image(small, 2, large, count)
                if each is None:  # still: the larger pass, set-up and all, per image
                    each = large / count
                slowest = max(slowest, each)
                setup = max(setup, min(small - 2 * each, large - count * each), 0.0)
                if self._past_ceiling(slowest * len(self.train) + setup):
                    break
            self.per_image[key] = slowest
            self.setup[key] = setup
        return self.per_image[key]

    @contextlib.contextmanager
    def option(self, at_least: float = 0.0) -> Iterator[None]:
        """One option's estimate inside: every pass it needs is timed, or, when the budget
        was spent timing the options before it (``give_up_at``), none is; ``at_least``:
        seconds this option is known to need (options timed cheapest first: the cheapest
        so far), so that one which cannot fit in what is left is not timed either."""
        timed_any = bool(self.per_image or self.per_step)
        late = self.give_up_at is not None and time.monotonic() + at_least > self.give_up_at
        self._skipping = timed_any and late
        try:
            yield
        finally:
            self._skipping = False

    def setup_seconds(self, backbone: str, size: int, layers: tuple[str, ...]) -> float:
        """The fixed seconds of one extraction pass (the fast path's set-up), timed."""
        if self.extraction(backbone, size, layers) == math.inf:
            return math.inf
        return self.setup.get((backbone, size, tuple(layers)), 0.0)

    def _given_up(self) -> bool:
        return self._skipping

    def _past_ceiling(self, seconds: float) -> bool:
        return self.ceiling is not None and seconds > self.ceiling

    def training_step(self, backbone: str, size: int, batch: int) -> float:
        """Seconds of one optimisation step (forward and backward) of ``batch`` images
        through ``backbone`` at ``size``, timed after a warm-up step of the same shape
        (random pixels: the arithmetic is the same; a smaller batch is not a guide on a
        CPU, where a step's fixed cost dominates)."""
        key = (backbone, size, batch)
        larger = [t for (b, s, n), t in self.per_step.items() if (b, s) == key[:2] and n > batch]
        if key not in self.per_step and larger:
            return min(larger)  # a step of more images bounds one of fewer: no new timing
        if key not in self.per_step and self._given_up():
            return math.inf
        if key not in self.per_step:
            import torch

            from headstart.backbones.registry import create_backbone

            model = create_backbone(backbone, _TIMING_WEIGHTS, image_size=size).model.train()
            inputs = torch.randn(batch, 3, size, size)
            model(inputs).float().sum().backward()  # warm-up
            slowest = 0.0
            for _ in range(self.timings):
                started = time.perf_counter()
                model(inputs).float().sum().backward()
                slowest = max(slowest, time.perf_counter() - started)
                if self._past_ceiling(slowest * -(-len(self.train) // batch)):  # one epoch
                    break
            self.per_step[key] = slowest
        return self.per_step[key]


def _per_image(small: float, few: int, large: float, many: int) -> float | None:
    """Seconds per image from a pass of ``few`` and one of ``many`` images; None when
    the difference is within the fixed cost's jitter (under a tenth of the larger pass:
    on a loaded machine the set-up alone moved by more than 30 images' worth)."""
    if large - small <= 0.1 * large:
        return None
    return (large - small) / (many - few)


def json_seconds(seconds: float) -> float | None:
    """``seconds`` rounded for a JSON file; None for a pass not timed (inf)."""
    return round(seconds, 2) if seconds != math.inf else None


def extraction_seconds(timer: Timer, member: tuple, images: int) -> tuple[float, str]:
    backbone, size, layers = member
    each = timer.extraction(backbone, size, layers)
    setup = timer.setup_seconds(backbone, size, layers)
    basis = (
        f"{images} images x {each * 1000:.0f} ms + {setup:.1f}s set-up "
        f"({backbone} {size} px, timed)"
    )
    return images * each + setup, basis


def fit_estimate(
    timer: Timer,
    strategy: str,
    backbone: str,
    size: int,
    config: Any,
    n_test: int,
    n_train: int | None = None,
    uncached: tuple[int | None, int | None] = (None, None),
) -> dict[str, tuple[float, str]]:
    """{step: (seconds, basis)} for fitting one model on ``n_train`` images (None: all of
    the timer's) and scoring its ``n_test`` test images. ``uncached``: of the training
    and test images, how many a frozen body's feature cache lacks (None: all of them);
    only those are timed and counted, and none at all when the cache has every one."""
    n = len(timer.train) if n_train is None else n_train
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
        missing = n if uncached[0] is None else min(uncached[0], n)
        if missing == 0:
            steps["extraction"] = (0.0, f"all {n} images' features in the cache; the probe only")
        else:
            seconds, basis = extraction_seconds(timer, (backbone, size, layers), missing)
            cached = f", {n - missing} more from the cache" if missing < n else ""
            steps["extraction"] = (
                seconds * (1 + PROBE_SHARE),
                basis + cached + f", + {PROBE_SHARE:.0%} probe",
            )
    else:  # scratch: every epoch a training pass, no pretrained features
        step = timer.training_step(backbone, size, min(config.batch_size, n))
        batches = -(-n // config.batch_size)
        steps["training"] = (
            config.epochs * batches * step,
            f"{config.epochs} epochs x {batches} steps x {step:.2f}s, one step timed",
        )
    frozen = strategy in ("feature-extraction", "semi-supervised")
    missing = n_test if uncached[1] is None or not frozen else min(uncached[1], n_test)
    if missing == 0 and n_test:
        steps["test pass"] = (0.0, f"all {n_test} test images' features in the cache")
    else:
        seconds, basis = extraction_seconds(timer, (backbone, size, ("final",)), missing)
        steps["test pass"] = (seconds, basis)
    return steps


def ensemble_estimate(
    timer: Timer, members: list[tuple], n_test: int
) -> dict[str, tuple[float, str]]:
    """{step: (seconds, basis)} for fitting ``members`` (backbone, size, layers) as an
    ensemble and scoring the test images through every one of them."""
    n = len(timer.train)
    setup = sum(timer.setup_seconds(*m) for m in members)  # each pass pays every member's
    fit = sum(timer.extraction(*m) for m in members) * n * (1 + ENSEMBLE_PROBE_SHARE) + setup
    # Scored the way its training features are extracted (estimator/ensemble_features.py).
    test = sum(timer.extraction(*m) for m in members) * n_test + setup
    names = ", ".join(f"{b} {s} px" for b, s, _ in members)
    return {
        "ensemble": (
            fit,
            f"{n} images through {names}, each timed, + {ENSEMBLE_PROBE_SHARE:.0%} probes",
        ),
        "test pass": (
            test,
            f"{n_test} images through {len(members)} members, each timed",
        ),
    }
