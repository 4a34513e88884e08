"""Imbalance acted on: ``class_weights="auto"`` (the default) balances the loss from a
class ratio of ``IMBALANCE_RATIO`` on and not below, says so in the plan, records it
beside the model, and ``none`` turns it off (Python and CLI); and `check` and `train`
speak the same numbers: every count `train` prints adds up to what it loaded."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from imbalance_data import Plans, noisy
from PIL import Image

from headstart.cli import main
from headstart.data.doctor import check_data
from headstart.data.findings import IMBALANCE_RATIO
from headstart.data.layout import load_images
from headstart.errors import ConfigError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.job.training import TrainingJob
from headstart.train.config import TrainConfig
from headstart.train.probe import fit_linear_probe
from headstart.train.weighting import class_weighting

TINY = {"backbone": "test_efficientnet", "weights": "none"}
TINY_CONFIG = {"image_size": 32, "layers": ("final",), "device": "cpu"}
TINY_ARGS = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]


# ------------------------------------------------------------------ the decision


@pytest.mark.parametrize(
    "largest, used", [(8, "none"), (9, "balanced"), (30, "balanced"), (3, "none")]
)
def test_auto_balances_from_the_ratio_and_not_below(largest: int, used: str) -> None:
    labels = np.array([0] * largest + [1] * 3 + [2] * 3)
    decided = class_weighting(labels, 3, "auto")
    assert (largest / 3 >= IMBALANCE_RATIO) == (used == "balanced")
    assert decided.used == used
    assert (decided.smallest, decided.largest) == (3, largest)
    note = decided.note()
    if used == "balanced":
        assert f"3 to {largest} images" in note and "{no_class_weights}" in note
    else:
        assert note is None  # nothing decided for the user on near-balanced classes


def test_explicit_settings_are_taken_as_given() -> None:
    labels = np.array([0] * 30 + [1] * 3)
    assert class_weighting(labels, 2, "none").used == "none"
    assert "as asked, although" in class_weighting(labels, 2, "none").note()
    balanced = class_weighting(np.array([0, 0, 1, 1]), 2, "balanced")
    assert balanced.used == "balanced" and "as asked" in balanced.note()


def test_the_default_is_auto_and_a_bad_value_names_the_choices() -> None:
    assert TrainConfig().class_weights == "auto"
    with pytest.raises(ConfigError, match="class_weights.*'auto'"):
        TrainConfig(class_weights="inverse")
    help_text = next(
        f.metadata["help"] for f in TrainConfig.__dataclass_fields__.values()
        if f.name == "class_weights"
    )  # fmt: skip
    assert f"{IMBALANCE_RATIO:g}x" in help_text  # the help states the ratio the code uses


def test_prior_shift_moves_each_bias_by_its_class_log_share() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = np.array([0] * 30 + [1] * 10)
    plain = fit_linear_probe(x, y, 2, seed=0)
    shifted = fit_linear_probe(x, y, 2, prior_shift=0.5, seed=0)
    moved = (shifted.head.bias - plain.head.bias).detach().numpy()
    np.testing.assert_allclose(moved, -0.5 * np.log([0.75, 0.25]), rtol=1e-5)
    np.testing.assert_array_equal(shifted.head.weight.detach(), plain.head.weight.detach())
    with pytest.raises(ConfigError, match="prior_shift"):
        fit_linear_probe(x, y, 2, prior_shift=-1.0)


# ------------------------------------------------------------------- Python API


@pytest.mark.parametrize("given, used", [("auto", "balanced"), ("none", "none")])
def test_fit_decides_prints_and_records_it(given: str, used: str, tmp_path: Path) -> None:
    train = noisy({"big": 12, "small": 3})  # ratio 4
    plans = Plans()
    config = TrainConfig(class_weights=given, **TINY_CONFIG)
    clf = ImageClassifier(strategy="feature-extraction", config=config, callback=plans, **TINY)
    clf.fit(train)
    assert clf.config.class_weights == given  # fit leaves the arguments as given
    assert clf.config_.class_weights == used  # and saves what trained
    assert clf.class_weighting_["setting"] == given and clf.class_weighting_["used"] == used
    (note,) = [n for n in plans.plans[0].notes if "class weights" in n]
    assert "3 to 12 images" in note and ("(auto)" in note) == (given == "auto")
    saved = json.loads((clf.save(tmp_path / "m") / "headstart.json").read_text())
    assert saved["class_weights"]["used"] == used and saved["config"]["class_weights"] == used
    assert any("class weights" in n for n in saved["plan"]["notes"])
    assert ImageClassifier.load(tmp_path / "m").class_weighting_ == clf.class_weighting_


def test_near_balanced_classes_train_as_before(tmp_path: Path) -> None:
    train = noisy({"a": 8, "b": 3})  # ratio 2.7: below the ratio
    fits = {}
    for given in ("auto", "none"):
        config = TrainConfig(class_weights=given, **TINY_CONFIG)
        fits[given] = ImageClassifier(strategy="feature-extraction", config=config, **TINY)
        fits[given].fit(train)
    assert fits["auto"].config_.class_weights == "none"
    head = {k: fits[k].model_.head.weight.detach() for k in fits}
    assert bool((head["auto"] == head["none"]).all())  # the same run, bit for bit


def test_training_job_opt_out_through_config_changes(tmp_path: Path) -> None:
    train, test = noisy({"big": 12, "small": 3}), noisy({"big": 2, "small": 2}, seed=1)
    for changes, used in (({}, "balanced"), ({"class_weights": "none"}, "none")):
        job = TrainingJob((train, test), config={**TINY_CONFIG, **changes}, **TINY)
        assert job.run().classifier.config_.class_weights == used


# ------------------------------------------------------------------------- CLI


def png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def messy_folder(root: Path) -> Path:
    """30 + 6 images (ratio 5), 3 same-label copies, 1 image under both labels, 1 bad file."""
    for i in range(30):
        png(root / "big" / f"b{i:02d}.png", i)
    for i in range(6):
        png(root / "small" / f"s{i}.png", 100 + i)
    for i in range(3):
        shutil.copy(root / "big" / f"b{i:02d}.png", root / "big" / f"copy{i}.png")
    shutil.copy(root / "big/b10.png", root / "small/also_big.png")
    (root / "small/broken.png").write_bytes(b"not an image")
    return root


def number(pattern: str, text: str) -> tuple[int, ...]:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in:\n{text}"
    return tuple(int(group) for group in found.groups())


def test_train_counts_add_up_and_match_check(tmp_path: Path, capsys) -> None:
    root = messy_folder(tmp_path / "data")
    out = tmp_path / "model"
    args = ["train", str(root), "--out", str(out), "--device", "cpu", *TINY_ARGS]
    assert main([*args, "--cache-dir", str(tmp_path / "cache"), "--layers", "final"]) == 0
    printed = capsys.readouterr().out
    loaded, skipped, files, train, test = number(
        r"split: the (\d+) images loaded \((\d+) of (\d+) files skipped\) = (\d+) training "
        r"\+ (\d+) test",
        printed,
    )
    assert loaded + skipped == files == 41 and train + test == loaded == 40
    # The plan states the class weights, with the training images' own counts.
    smallest, largest = number(r"class weights balanced \(auto\): the training classes hold "
                               r"(\d+) to (\d+) images", printed)  # fmt: skip
    meta = json.loads((out / "headstart.json").read_text())
    recorded = meta["class_weights"]
    assert (smallest, largest) == (recorded["smallest"], recorded["largest"])
    assert smallest + largest == train  # two classes: every training image counted once
    # The doctor's counts are those `check` gives for the whole folder, and say so.
    diagnosis = check_data(root)
    (repeats,) = number(r"check: (\d+) duplicate file\(s\) with the same label", printed)
    (conflicts,) = number(r"check: (\d+) image\(s\) appear under two", printed)
    assert repeats == diagnosis.find("duplicate").count == 3
    assert conflicts == diagnosis.find("conflict").count == 1
    assert f"counted over {train} train + {test} test = {loaded} images" in printed
    # Features are computed once per distinct file: the count of repeats closes the sum.
    shown, distinct, shared = number(
        r"features: train: (\d+) images, (\d+) distinct \((\d+) repeated", printed
    )
    assert shown == train and distinct + shared == train
    split_train, _ = load_images(root, test_size=0.2, seed=0)  # the split train made
    assert distinct == len(set(split_train.content_hashes())) < len(split_train) == train
    summary = next(line for line in printed.splitlines() if line.startswith("test balanced"))
    assert summary.index("balanced accuracy") < summary.index(", accuracy")


def test_cli_class_weights_none_restores_the_old_training(tmp_path: Path, capsys) -> None:
    root = messy_folder(tmp_path / "data")
    out = tmp_path / "model"
    args = ["train", str(root), "--out", str(out), "--device", "cpu", "--no-cache", *TINY_ARGS]
    assert main([*args, "--layers", "final", "--class-weights", "none"]) == 0
    printed = capsys.readouterr().out
    assert "class weights none, as asked, although the training classes hold" in printed
    assert "(auto)" not in printed
    meta = json.loads((out / "headstart.json").read_text())
    assert meta["config"]["class_weights"] == "none"
    assert meta["class_weights"] == {**meta["class_weights"], "setting": "none", "used": "none"}


def test_check_says_which_images_it_counted(tmp_path: Path, capsys) -> None:
    root = messy_folder(tmp_path / "data")
    assert main(["check", str(root)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "all 40 images as loaded, before any split" in first
