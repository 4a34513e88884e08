"""An exported file's card is checked with the bounds a trained model has before any
of it is used: a tampered ``model.onnx`` is a one-line error naming the file and the
field (exit 2), never an IndexError from the top-k code nor a 30 GB resize."""

from __future__ import annotations

import json

import pytest
from fixtures_images import colour_data

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from headstart.cli import main  # noqa: E402
from headstart.errors import DataError  # noqa: E402
from headstart.estimator.image_classifier import ImageClassifier  # noqa: E402
from headstart.export.runtime import OnnxClassifier  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_model_folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("card") / "model.onnx"
    ImageClassifier.load(tiny_model_folder).export(path, images=colour_data(per_class=2, seed=3))
    return path


def tampered(exported, tmp_path, **fields):
    model = onnx.load(str(exported))
    for prop in model.metadata_props:
        if prop.key in fields:
            prop.value = json.dumps(fields[prop.key])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def card_field(exported, key):
    model = onnx.load(str(exported))
    return json.loads(next(p.value for p in model.metadata_props if p.key == key))


def test_classes_shorter_than_the_head_are_refused(exported, tmp_path, capsys):
    path = tampered(exported, tmp_path, classes=["blue", "green"])  # the head gives 3
    with pytest.raises(DataError, match=r"'classes' names 2 classes, but the model answers"):
        OnnxClassifier.load(path).predict_proba(colour_data(per_class=1, seed=5))
    image = tmp_path / "x.png"
    colour_data(per_class=1, seed=5).image(0).save(image)
    assert main(["predict", str(path), str(image)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'classes'" in err and "Traceback" not in err


def test_an_input_size_beyond_the_bounds_is_refused_before_any_resize(exported, tmp_path, capsys):
    pre = card_field(exported, "preprocessing")
    path = tampered(exported, tmp_path, preprocessing={**pre, "input_size": [3, 100000, 100000]})
    with pytest.raises(DataError, match=r"'preprocessing.input_size' must be \[3, height, width"):
        OnnxClassifier.load(path)
    image = tmp_path / "x.png"
    colour_data(per_class=1, seed=5).image(0).save(image)
    assert main(["predict", str(path), str(image)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "16 to 2048" in err and "MemoryError" not in err


@pytest.mark.parametrize(
    ("field", "value"),
    [("mean", [0.5, float("nan"), 0.5]), ("std", [0.2, 0.0, 0.2]), ("std", "wide")],
)
def test_mean_and_std_must_be_finite_and_std_positive(exported, tmp_path, field, value):
    pre = card_field(exported, "preprocessing")
    path = tampered(exported, tmp_path, preprocessing={**pre, field: value})
    with pytest.raises(DataError, match=rf"'preprocessing.{field}' must be three finite"):
        OnnxClassifier.load(path)


def test_the_untampered_export_still_loads(exported):
    assert OnnxClassifier.load(exported).classes_ == ["blue", "green", "red"]
