"""Class-balanced sampling (``class_weights="sampling"``): each epoch's draws are
balanced, seeded, the same after a resume and at any world size; auto picks it for the
strategies that train the network in batches (fine-tune, scratch) on imbalanced
classes and not on balanced ones; ``none`` turns it off; the plan says it and
headstart.json records it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from imbalance_data import Plans, noisy
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from headstart.cli import main
from headstart.errors import TrainingError, TrainingInterrupted
from headstart.estimator.image_classifier import ImageClassifier
from headstart.parallel import World
from headstart.strategies import common
from headstart.strategies.registry import get_strategy
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig
from headstart.train.distributed import shard_batches
from headstart.train.loop import train_loop
from headstart.train.sampling import balanced_order, epoch_batches
from headstart.train.weighting import class_weighting

TINY = {"backbone": "test_efficientnet", "weights": "none"}
LABELS = np.array([0] * 40 + [1] * 12 + [2] * 3)  # ratio 13


def draw(labels: np.ndarray, seed: int) -> list[int]:
    return balanced_order(labels, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ the sampler


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_epoch_draws_each_class_equally_often(seed: int) -> None:
    order = draw(LABELS, seed)
    assert len(order) == len(LABELS)  # the epoch keeps its length
    counts = np.bincount(LABELS[order], minlength=3)
    assert counts.sum() == 55 and counts.max() - counts.min() <= 1  # 55 = 18 + 18 + 19
    drawn = np.bincount(order, minlength=len(LABELS))
    # The small class's 3 images each come 6 or 7 times; the large class's never twice.
    assert sorted(set(drawn[LABELS == 2].tolist())) in ([6], [6, 7], [7])
    assert drawn[LABELS == 2].sum() == counts[2]
    assert drawn[LABELS == 0].max() == 1 and drawn[LABELS == 0].sum() == counts[0]


def test_draws_are_shuffled_across_classes_and_skip_absent_ones() -> None:
    order = draw(LABELS, 0)
    classes = LABELS[order]
    assert not (np.diff(classes) >= 0).all()  # not grouped by class
    labels = np.array([0] * 10 + [3] * 2)  # classes 1 and 2 have no images
    assert np.bincount(labels[draw(labels, 0)]).tolist() == [6, 0, 0, 6]


def test_the_draw_is_seeded_by_seed_and_epoch() -> None:
    def batches(seed: int, epoch: int) -> list[list[int]]:
        return epoch_batches(len(LABELS), 8, seed, epoch, True, balance_labels=LABELS)

    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 0) != batches(0, 1) and batches(0, 0) != batches(1, 0)
    # Balanced, not the plain shuffle of the same generator; in order without shuffling.
    assert batches(0, 0) != epoch_batches(len(LABELS), 8, 0, 0, True)
    plain = epoch_batches(len(LABELS), 8, 0, 0, False, balance_labels=LABELS)
    assert [i for b in plain for i in b] == list(range(len(LABELS)))


def test_every_rank_slices_the_same_sampled_global_batches() -> None:
    """Ranks build the global order from (seed, epoch) alone: their slices put together
    are the one-process batches, image for image."""
    batches = epoch_batches(len(LABELS), 8, 3, 2, True, balance_labels=LABELS)
    slices = [shard_batches(batches, World(rank, 2, rank))[0] for rank in (0, 1)]
    assert [a + b for a, b in zip(*slices, strict=True)] == batches


# --------------------------------------------------------------------- the loop


class Seen(nn.Module):
    """A linear layer that records which items each step trained on (column 0 holds
    each item's index)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 3)
        self.items: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.items.append(x[:, 0].long().tolist())
        return self.linear(x)


def items() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(len(LABELS), 4, generator=generator)
    x[:, 0] = torch.arange(len(LABELS), dtype=torch.float32)
    return TensorDataset(x, torch.from_numpy(LABELS))


class SigintAt(Callback):
    def __init__(self, at: tuple[int, int]) -> None:
        self.at = at

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        if (epoch, step) == self.at:
            os.kill(os.getpid(), signal.SIGINT)  # the loop's handler only sets a flag


def loop(checkpoint: Path, model: Seen, *, resume: bool = False, callback=None, **kwargs):
    config = TrainConfig(epochs=3, batch_size=8, patience=0, fast=False, device="cpu", seed=4)
    return train_loop(
        model,
        items(),
        None,
        param_groups=[{"params": list(model.parameters()), "lr": 0.05}],
        config=config,
        stage="head",
        checkpoint=checkpoint,
        resume=resume,
        callback=callback,
        **kwargs,
    )


def test_the_loop_trains_on_balanced_epochs_and_resumes_on_the_same_batches(
    tmp_path: Path,
) -> None:
    reference = Seen()
    loop(tmp_path / "a" / "checkpoint-head.pt", reference, balance_labels=LABELS)
    steps = len(reference.items) // 3
    for epoch in range(3):
        seen = [i for batch in reference.items[epoch * steps : (epoch + 1) * steps] for i in batch]
        counts = np.bincount(LABELS[seen], minlength=3)
        assert len(seen) == len(LABELS) and counts.max() - counts.min() <= 1

    interrupted = Seen()
    checkpoint = tmp_path / "b" / "checkpoint-head.pt"
    with pytest.raises(TrainingInterrupted):
        loop(checkpoint, interrupted, callback=SigintAt((2, 3)), balance_labels=LABELS)
    resumed = Seen()
    outcome = loop(checkpoint, resumed, resume=True, balance_labels=LABELS)
    assert outcome.resumed_from == (1, 3)
    assert interrupted.items + resumed.items == reference.items  # the same batches
    for a, b in zip(resumed.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_balance_labels_must_match_the_training_items(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="balance_labels holds 54 labels for 55"):
        loop(tmp_path / "checkpoint-head.pt", Seen(), balance_labels=LABELS[:-1])


# ------------------------------------------------------------ auto and the faces


@pytest.mark.parametrize(
    "strategy, used", [("fine-tune", "sampling"), ("scratch", "sampling"),
                       ("feature-extraction", "balanced"), ("semi-supervised", "balanced")]
)  # fmt: skip
def test_auto_balances_by_what_the_strategy_trains(strategy: str, used: str) -> None:
    balance = get_strategy(strategy).auto_balance
    assert class_weighting(LABELS, 3, "auto", balance).used == used
    assert class_weighting(np.array([0] * 8 + [1] * 3), 2, "auto", balance).used == "none"
    assert class_weighting(LABELS, 3, "none", balance).used == "none"


def fine_tune(given: str, counts: dict[str, int], monkeypatch) -> tuple:
    """A one-epoch fine-tune; returns (classifier, the plan's notes, what the loop got)."""
    passed: dict = {}
    real = common.train_loop

    def spy(*args, **kwargs):
        passed.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(common, "train_loop", spy)
    config = get_strategy("fine-tune").default_config().replace(
        epochs=1, batch_size=8, image_size=32, device="cpu", class_weights=given,
        validation_fraction=0.0, augment=False
    )  # fmt: skip
    plans = Plans()
    clf = ImageClassifier(strategy="fine-tune", config=config, callback=plans, **TINY)
    clf.fit(noisy(counts))
    return clf, plans.plans[0].notes, passed


def test_fine_tune_auto_samples_balanced_on_imbalanced_classes(monkeypatch, tmp_path) -> None:
    clf, notes, passed = fine_tune("auto", {"big": 16, "small": 4}, monkeypatch)
    assert clf.config_.class_weights == "sampling"
    assert passed["class_weights"] is None  # the loss is not weighted as well
    assert passed["balance_labels"].tolist() == [0] * 16 + [1] * 4
    (note,) = [n for n in notes if n.startswith("class weights")]
    assert "by sampling (auto)" in note and "4 to 16 images" in note
    assert "{no_class_weights}" in note
    assert any("linear probe" in n and "weights its loss" in n for n in notes)  # LP-FT's
    saved = json.loads((clf.save(tmp_path / "m") / "headstart.json").read_text())
    assert saved["class_weights"]["used"] == "sampling"
    assert saved["config"]["class_weights"] == "sampling"
    assert ImageClassifier.load(tmp_path / "m").class_weighting_["used"] == "sampling"


@pytest.mark.parametrize(
    "given, counts", [("auto", {"a": 8, "b": 6}), ("none", {"big": 16, "small": 4})]
)
def test_fine_tune_shuffles_as_before_on_balanced_classes_or_when_told(
    given: str, counts: dict[str, int], monkeypatch
) -> None:
    clf, notes, passed = fine_tune(given, counts, monkeypatch)
    assert clf.config_.class_weights == "none"
    assert passed["balance_labels"] is None and passed["class_weights"] is None
    assert not any("by sampling" in n for n in notes)


def test_sampling_asked_for_a_linear_probe_weights_its_loss() -> None:
    """A probe has no batches: under "sampling" it trains exactly as under "balanced"."""
    train = noisy({"big": 12, "small": 3})
    heads = {}
    for given in ("sampling", "balanced"):
        config = TrainConfig(class_weights=given, image_size=32, layers=("final",), device="cpu")
        clf = ImageClassifier(strategy="feature-extraction", config=config, **TINY).fit(train)
        assert clf.config_.class_weights == given
        heads[given] = clf.model_.head.weight.detach()
    assert torch.equal(heads["sampling"], heads["balanced"])


def test_cli_sampling_is_said_and_recorded(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name, count in (("big", 20), ("small", 5)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    out = tmp_path / "model"
    args = ["train", str(root), "--out", str(out), "--device", "cpu", "--no-cache"]
    args += ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]
    assert main([*args, "--layers", "final", "--class-weights", "sampling"]) == 0
    printed = capsys.readouterr().out
    assert "class weights by sampling, as asked" in printed
    assert "weights its loss by class instead (as --class-weights balanced does)" in printed
    meta = json.loads((out / "headstart.json").read_text())
    assert meta["class_weights"]["setting"] == meta["class_weights"]["used"] == "sampling"
