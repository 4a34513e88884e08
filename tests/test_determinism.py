"""Determinism: one seed, one result. Two CPU fits with the same seed give identical
metrics and bit-identical weights under every registered strategy, and every saved
model records the seed and the versions that produced it."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import headstart
from headstart.data.arrays import from_arrays
from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.strategies import STRATEGIES
from headstart.strategies.registry import get_strategy

TINY = "test_efficientnet"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pre-trained stand-in for the strategies that start from weights."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    state = timm.create_model(TINY).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def colour_data(count: int, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    images = rng.integers(0, 90, (count, 20, 20, 3), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index, :, :, label] += 150
    return from_arrays(images, labels)


def fit(strategy: str, weights: Path, *, seed: int, augment: bool) -> ImageClassifier:
    """60 images, 20 per class: enough to carve a validation split, so early stopping is
    in play too (the history's validation accuracy is checked below)."""
    config = (
        get_strategy(strategy)
        .default_config()
        .replace(epochs=2, batch_size=8, image_size=32, device="cpu", seed=seed, augment=augment)
        .replace(dropout=0.1)
    )
    unlabelled = colour_data(12, 2) if get_strategy(strategy).uses_unlabelled else None
    clf = ImageClassifier(TINY, strategy, config, weights=weights)
    return clf.fit(colour_data(60, 0), unlabelled=unlabelled)


def without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def differing(a: ImageClassifier, b: ImageClassifier) -> list[str]:
    first, second = a.model_.state_dict(), b.model_.state_dict()
    assert first.keys() == second.keys()
    return [name for name in first if not torch.equal(first[name], second[name])]


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_same_seed_gives_identical_metrics_and_bit_identical_weights(
    strategy: str, augment: bool, weights: Path
) -> None:
    if augment and get_strategy(strategy).uses_unlabelled:
        with pytest.raises(ConfigError, match="augment"):  # refused by name, not ignored
            fit(strategy, weights, seed=3, augment=augment)
        return
    first = fit(strategy, weights, seed=3, augment=augment)
    second = fit(strategy, weights, seed=3, augment=augment)

    assert differing(first, second) == []
    if first.config_.validation_fraction > 0:  # a hold-out was carved and watched
        assert all(record["val_accuracy"] is not None for record in first.history_)
    assert without_timing(first.history_) == without_timing(second.history_)
    test = colour_data(12, 1)
    assert first.evaluate(test) == second.evaluate(test)
    np.testing.assert_array_equal(first.predict_proba(test), second.predict_proba(test))

    other = fit(strategy, weights, seed=4, augment=augment)
    assert differing(first, other) != []  # the seed is really what decides


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_saved_model_records_its_seed_and_versions(
    strategy: str, weights: Path, tmp_path: Path
) -> None:
    folder = fit(strategy, weights, seed=5, augment=False).save(tmp_path / strategy)
    meta = json.loads((folder / "headstart.json").read_text())
    assert meta["seed"] == 5 and meta["config"]["seed"] == 5
    assert meta["versions"] == {
        "headstart": headstart.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }
    assert meta["strategy"] == strategy
    assert ImageClassifier.load(folder).metadata_["seed"] == 5
