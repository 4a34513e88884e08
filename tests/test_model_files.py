"""A saved model folder is trusted only as far as it checks out: its weights are the
bytes written at save (a sha256 in headstart.json), its description agrees with itself
and with the weights, and a model that scores an image NaN says so instead of
printing ``nan%``."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import colour_data
from PIL import Image
from safetensors.torch import load_file, save_file

from headstart.cli import main
from headstart.errors import DataError, WeightsError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.strategies.registry import get_strategy

TINY = "test_efficientnet"


def _fitted() -> ImageClassifier:
    config = get_strategy("feature-extraction").default_config().replace(image_size=32)
    torch.manual_seed(0)
    return ImageClassifier(TINY, "feature-extraction", config, weights="none").fit(colour_data())


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return _fitted().save(tmp_path_factory.mktemp("saved") / "m")


@pytest.fixture
def model(saved: Path, tmp_path: Path) -> Path:
    """A fresh copy of the saved model, free to damage."""
    return Path(shutil.copytree(saved, tmp_path / "m"))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (20, 20), (220, 30, 30)).save(path)
    return path


def _edit_meta(model: Path, change: Callable[[dict], None]) -> None:
    path = model / "headstart.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert "nan" not in captured.out.lower()
    return err


# ------------------------------------------------------------ non-finite scores


def test_non_finite_scores_are_refused_naming_the_images(tmp_path, image):
    """A NaN weight (in memory, where no file check can see it) makes every score NaN:
    predict_proba, predict_files and evaluate refuse, naming the images."""
    clf = _fitted()
    with torch.no_grad():
        next(clf.model_.head.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(WeightsError, match="non-finite") as caught:
        clf.predict_proba([image])
    assert str(image) in str(caught.value)
    with pytest.raises(WeightsError, match="non-finite"):
        clf.predict_files([image])
    with pytest.raises(WeightsError, match="non-finite"):
        clf.evaluate(colour_data(2, 5))
    clf.cache_dir = tmp_path / "cache"  # the feature cache's path to the head, too
    with pytest.raises(WeightsError, match="non-finite"):
        clf.evaluate(colour_data(2, 5))


def test_non_finite_scores_of_a_loaded_model_name_its_folder(model, image, capsys):
    """A standard deviation so small that normalised pixels overflow: the description is
    valid, the scores are not; the error names the model folder and the image."""
    _edit_meta(model, lambda meta: meta["preprocessing"].update(std=[1e-45] * 3))
    with pytest.raises(WeightsError, match="non-finite") as caught:
        ImageClassifier.load(model).predict_proba([image])
    assert str(model) in str(caught.value) and str(image) in str(caught.value)
    for format in ("table", "json"):
        assert main(["predict", str(model), str(image), "--format", format]) == 2
        assert str(image) in _one_error_line(capsys)


def test_a_nan_weight_in_an_unhashed_model_is_refused_naming_the_file(model, image, capsys):
    """A model saved before weights were hashed, with one NaN weight: refused at load."""
    path = model / "model.safetensors"
    tensors = load_file(str(path))
    name = next(k for k in sorted(tensors) if k.startswith("head"))
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path))
    _edit_meta(model, lambda meta: meta.pop("weights_file_sha256", None))
    with pytest.raises(WeightsError, match="non-finite") as caught:
        ImageClassifier.load(model)
    assert str(path) in str(caught.value) and name in str(caught.value)
    assert main(["predict", str(model), str(image)]) == 2
    assert "model.safetensors" in _one_error_line(capsys)
    assert main(["evaluate", str(model), str(image.parent), "--no-cache"]) == 2


# ------------------------------------------------------------- the weights' hash


def test_the_saved_description_records_the_weights_sha256(model):
    meta = json.loads((model / "headstart.json").read_text())
    digest = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    assert meta["weights_file_sha256"] == digest


def test_flipped_bits_in_the_weights_are_a_weights_error_naming_the_file(model, image, capsys):
    path = model / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x04  # one bit of one weight: still a valid file, still finite
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256") as caught:
        ImageClassifier.load(model)
    assert str(path) in str(caught.value)
    assert main(["predict", str(model), str(image)]) == 2
    assert "model.safetensors" in _one_error_line(capsys)


def test_a_model_saved_without_the_hash_still_loads(model, saved, image):
    _edit_meta(model, lambda meta: meta.pop("weights_file_sha256", None))
    np.testing.assert_array_equal(
        ImageClassifier.load(model).predict_proba([image]),
        ImageClassifier.load(saved).predict_proba([image]),
    )


# ------------------------------------------------- the description's own fields


def _set(field: str, value) -> Callable[[dict], None]:
    return lambda meta: meta.update({field: value})


def _prep(field: str, value) -> Callable[[dict], None]:
    return lambda meta: meta["preprocessing"].update({field: value})


DAMAGES = {
    "fewer classes than the head": (_set("classes", ["red", "green"]), "classes"),
    "more classes than the head": (_set("classes", ["red", "green", "blue", "x"]), "classes"),
    "classes not a list": (_set("classes", "red,green,blue"), "classes"),
    "duplicate class names": (_set("classes", ["red", "red", "blue"]), "classes"),
    "unknown interpolation": (_prep("interpolation", "smooth"), "interpolation"),
    "input size of 0": (_prep("input_size", [3, 0, 0]), "input_size"),
    "a std of 0": (_prep("std", [0.0, 0.0, 0.0]), "std"),
    "a NaN mean": (_prep("mean", [float("nan")] * 3), "mean"),
}


@pytest.mark.parametrize("damage, field", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_description_that_does_not_add_up_is_a_data_error_naming_the_field(
    model, image, capsys, damage, field
):
    _edit_meta(model, damage)
    with pytest.raises(DataError) as caught:
        ImageClassifier.load(model)
    message = str(caught.value)
    assert "headstart.json" in message and repr(field) in message
    assert main(["predict", str(model), str(image)]) == 2
    err = _one_error_line(capsys)
    assert "headstart.json" in err and repr(field) in err
