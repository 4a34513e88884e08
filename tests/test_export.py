"""ONNX export: the parity gate, the card the file carries, prediction without torch,
the consumer example, int8, and the errors a user can run into.

(Every strategy on four architecture families is exported and checked in
test_contract.py.)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import colour_data, colour_folder
from PIL import Image

from headstart.backbones.preprocessing import Preprocessing
from headstart.cli import main
from headstart.errors import ConfigError, ExportError, NotFittedError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.export import exporter as exporter_module
from headstart.export import graph as graph_module
from headstart.export import quantize as quantize_module
from headstart.export.contract import read_card, sidecar_path
from headstart.export.runtime import OnnxClassifier
from headstart.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONSUMER = ROOT / "docs" / "examples" / "onnx_consumer.py"
TINY_ARGS = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]
# Run in a subprocess first: afterwards, importing any of these fails.
BLOCK_IMPORTS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="module")
def fitted() -> ImageClassifier:
    """A tiny fitted model reading two layers (multi-stage features) at 32 px."""
    torch.manual_seed(0)
    config = TrainConfig(epochs=2, image_size=32, batch_size=8, layers=("stage-2", "final"))
    clf = ImageClassifier("test_efficientnet", "feature-extraction", config, weights="none")
    return clf.fit(colour_data(per_class=8, seed=0))


@pytest.fixture(scope="module")
def test_images():
    return colour_data(per_class=4, seed=1)


@pytest.fixture(scope="module")
def exported(fitted, test_images, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    fitted.export(path, images=test_images)
    return path


def _run_blocked(code: str, blocked: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    prelude = f"BLOCKED = {blocked!r}\n{BLOCK_IMPORTS}"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_resize_crop_is_timm_evaluation_geometry() -> None:
    """Pillow alone gives the pixels timm's transform gives (sizes, rounding, filters),
    so a torch-free consumer feeds the model exactly what PyTorch fed it."""
    base = Preprocessing((3, 224, 224), "bicubic", (0.5,) * 3, (0.25,) * 3, 0.875, "center")
    rng = np.random.default_rng(0)
    cases = itertools.product(
        [(28, 28), (300, 200), (199, 301), (224, 224), (50, 400)],
        ["bicubic", "bilinear", "nearest"],
        [0.875, 1.0, 1.15],
        ["center", "squash"],
        [112, 97],
    )
    for (w, h), interpolation, crop_pct, mode, size in cases:
        prep = replace(base, input_size=(3, size, size), interpolation=interpolation,
                       crop_pct=crop_pct, crop_mode=mode)  # fmt: skip
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        expected = prep.transform()(image).permute(1, 2, 0).numpy()
        pixels = np.asarray(prep.resize_crop(image), dtype=np.float32) / 255
        got = (pixels - 0.5) / 0.25
        assert np.abs(got - expected).max() < 1e-5, (w, h, interpolation, crop_pct, mode, size)
    wide = replace(base, input_size=(3, 96, 128))  # non-square: timm's ResizeKeepRatio
    squashed = replace(wide, crop_mode="squash")
    image = Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    expected = squashed.transform()(image).permute(1, 2, 0).numpy()
    got = (np.asarray(squashed.resize_crop(image), dtype=np.float32) / 255 - 0.5) / 0.25
    assert np.abs(got - expected).max() < 1e-5
    with pytest.raises(ValueError, match="non-square"):
        wide.resize_crop(image)
    with pytest.raises(ValueError, match="border"):
        replace(base, crop_mode="border").resize_crop(image)


def test_export_carries_its_card_and_gives_the_models_answers(
    fitted, test_images, exported
) -> None:
    card = read_card(exported)
    assert card["classes"] == fitted.classes_
    assert Preprocessing.from_dict(card["preprocessing"]) == fitted.preprocessing_
    assert card["backbone"] == "test_efficientnet" and card["strategy"] == "feature-extraction"
    assert card["layers"] == ["stage-2", "final"]
    assert card["input"]["dtype"] == "uint8" and card["input"]["layout"] == "NHWC"
    assert card["input"]["shape"] == ["batch", 32, 32, 3]
    import headstart

    assert card["headstart_version"] == headstart.__version__
    sidecar = json.loads(sidecar_path(exported).read_text())
    assert {k: v for k, v in sidecar.items() if k in card} == card  # the same card twice
    assert sidecar["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert sidecar["parity"]["images"] == len(test_images)
    assert sidecar["parity"]["max_probability_gap"] < 1e-4

    model = OnnxClassifier.load(exported)
    assert model.classes_ == fitted.classes_
    proba = model.predict_proba(test_images)
    reference = torch.softmax(fitted.model_.eval()(_batch(fitted, test_images)), 1).detach()
    assert np.abs(proba - reference.numpy()).max() < 1e-4
    # the batch axis is dynamic: one image at a time gives the same rows
    ones = np.concatenate([model.predict_proba([test_images.image(i)]) for i in range(3)])
    np.testing.assert_allclose(ones, proba[:3], atol=1e-6)
    truth = np.asarray(test_images.classes)[test_images.labels]
    assert model.evaluate(test_images)["accuracy"] == pytest.approx(
        float((model.predict(test_images) == truth).mean())
    )


def _batch(clf: ImageClassifier, images) -> torch.Tensor:
    transform = clf.preprocessing_.transform()
    return torch.stack([transform(images.image(i)) for i in range(len(images))])


def test_perturbed_export_is_refused_and_not_written(
    fitted, test_images, tmp_path, monkeypatch
) -> None:
    """An export whose answers drift from PyTorch's fails: no file under the target's
    name, the failed one kept as NAME.rejected.onnx, and an earlier file left alone."""
    real_fold = graph_module.fold_batchnorm

    def perturbed(model, sample, stages=None):
        folded, n = real_fold(model, sample, stages)
        folded = __import__("copy").deepcopy(folded)
        with torch.no_grad():  # one class's row of the head swapped with the next's
            folded.head.weight.copy_(folded.head.weight.roll(1, dims=0))
        return folded, n

    target = tmp_path / "model.onnx"
    earlier = b"an earlier export"
    target.write_bytes(earlier)
    monkeypatch.setattr(graph_module, "fold_batchnorm", perturbed)
    with pytest.raises(ExportError, match=r"does not give the PyTorch model's answers.*max \|Δp\|"):
        fitted.export(target, images=test_images)
    assert target.read_bytes() == earlier  # untouched, and the message says so
    assert not sidecar_path(target).exists()
    assert (tmp_path / "model.rejected.onnx").is_file()


def test_a_failed_write_leaves_neither_file(fitted, test_images, tmp_path, monkeypatch) -> None:
    """The disk fills while the sidecar is written: neither the model nor the sidecar
    appears, and no temp file stays behind."""
    real = exporter_module.atomic_write_files

    def disk_full(files):
        def fail(handle):
            handle.write(b"{")
            raise OSError(28, "No space left on device")

        return real([files[0], (files[1][0], fail)])

    monkeypatch.setattr(exporter_module, "atomic_write_files", disk_full)
    with pytest.raises(OSError, match="No space left"):
        fitted.export(tmp_path / "out" / "model.onnx", images=test_images)
    assert os.listdir(tmp_path / "out") == []


def test_predict_and_evaluate_from_onnx_never_import_torch(exported, tmp_path) -> None:
    folder = colour_folder(tmp_path / "imgs", per_class=3, broken=True)
    code = f"""
from headstart.cli import main
codes = [main(["predict", {str(exported)!r}, {str(folder / "red")!r}, "--format", "json"]),
         main(["evaluate", {str(exported)!r}, {str(folder)!r}])]
print("codes", codes, "torch" in sys.modules)
try:
    import torch
except ImportError:
    print("torch import blocked")
"""
    done = _run_blocked(code, ("torch", "torchvision", "timm"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "codes [0, 0] False" in done.stdout and "torch import blocked" in done.stdout
    assert '"class": "red"' in done.stdout and "accuracy" in done.stdout
    assert "not-an-image.jpg" in done.stderr  # the broken file is reported, not fatal


def test_consumer_example_needs_only_onnxruntime_pillow_numpy(fitted, exported, tmp_path) -> None:
    """It answers as headstart does, also on a transparent PNG (composited on the
    model's background colour) and on a photo larger than the decoder's max side."""
    pixels = np.full((40, 30, 3), 30, np.uint8)
    pixels[:, :, 1] = 200
    Image.fromarray(pixels).save(tmp_path / "green.png")
    rgba = np.zeros((30, 50, 4), np.uint8)
    rgba[:, :25] = (200, 20, 20, 255)  # red half, transparent half (white by default)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half-clear.png")
    big = np.random.default_rng(3).integers(0, 60, (1100, 1500, 3), dtype=np.uint8)
    big[:, :, 2] += 150
    Image.fromarray(big).save(tmp_path / "big-blue.png")
    model = OnnxClassifier.load(exported)
    for name in ("green.png", "half-clear.png", "big-blue.png"):
        code = f"""
sys.argv = ["onnx_consumer.py", {str(exported)!r}, {str(tmp_path / name)!r}]
import runpy
runpy.run_path({str(CONSUMER)!r}, run_name="__main__")
"""
        done = _run_blocked(code, ("torch", "torchvision", "timm", "headstart"), tmp_path)
        assert done.returncode == 0, done.stderr
        expected = model.predict_files([tmp_path / name], top_k=1)[0][0]
        label, probability = done.stdout.split()[-2:]
        assert label == expected.label, name
        assert float(probability) == pytest.approx(expected.top[0][1], abs=1e-3), name
    assert len(CONSUMER.read_text().strip().splitlines()) <= 30


def test_int8_is_written_with_its_card_or_refused_by_its_threshold(
    fitted, test_images, tmp_path, monkeypatch
) -> None:
    result = fitted.export(tmp_path / "model.onnx", quantize="int8", max_accuracy_drop=100,
                           images=test_images, calibration=test_images)  # fmt: skip
    q = result.quantized
    assert q.path == tmp_path / "model.int8.onnx" and q.measured_by == "accuracy"
    card = read_card(q.path)
    assert card["quantization"]["type"] == "int8" and card["classes"] == fitted.classes_
    assert OnnxClassifier.load(q.path).predict_proba(test_images).shape == (len(test_images), 3)
    assert q.bytes < result.bytes

    # an int8 model that answers badly (its head negated) is refused; fp32 is kept
    import onnx

    def bad_int8(data, preprocessing, calibration):
        proto = onnx.load_from_string(data)
        last = proto.graph.initializer[-1]
        for tensor in proto.graph.initializer:
            if len(tensor.dims) == 2:
                last = tensor
        weights = onnx.numpy_helper.to_array(last)
        last.CopyFrom(onnx.numpy_helper.from_array(-weights, last.name))
        return proto.SerializeToString()

    monkeypatch.setattr(quantize_module, "quantize_int8", bad_int8)
    out = tmp_path / "again" / "model.onnx"
    with pytest.raises(ExportError, match=r"int8 costs .* points \(of accuracy\).*not written"):
        fitted.export(out, quantize="int8", max_accuracy_drop=1.0, images=test_images)
    assert out.is_file() and not (out.parent / "model.int8.onnx").exists()


def test_export_arguments_fail_before_the_work(fitted, tmp_path) -> None:
    with pytest.raises(ConfigError, match="opset"):
        fitted.export(tmp_path / "m.onnx", opset=7)
    with pytest.raises(ConfigError, match="format"):
        fitted.export(tmp_path / "m.tflite", format="tflite")
    with pytest.raises(ConfigError, match="quantize"):
        fitted.export(tmp_path / "m.onnx", quantize="int4")
    with pytest.raises(NotFittedError):
        ImageClassifier().export(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_cli_export_checks_on_the_runs_own_test_images(tmp_path, capsys) -> None:
    folder = colour_folder(tmp_path / "imgs", per_class=6)
    run = tmp_path / "run"
    assert main(["train", str(folder), "--out", str(run), *TINY_ARGS]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"the run's test images from {folder.resolve()}" in out
    assert "top-1 agreement 100.0%" in out and (run / "model.onnx").is_file()
    assert main(["predict", str(run / "model.onnx"), str(folder / "blue" / "0.png")]) == 0
    assert "blue" in capsys.readouterr().out.split(":")[-1].split(",")[0]
    # the file is made to be shipped: no local folder in it or its sidecar
    assert str(tmp_path) not in (run / "model.onnx.json").read_text()
    sidecar = json.loads((run / "model.onnx.json").read_text())
    assert sidecar["parity"]["images_from"] == "the run's test images"
    assert str(tmp_path).encode() not in (run / "model.onnx").read_bytes()

    # trained again in place: the old export is gone with the old model
    assert main(["train", str(folder), "--out", str(run), "--overwrite", *TINY_ARGS]) == 0
    assert not (run / "model.onnx").exists() and not (run / "model.onnx.json").exists()

    # a moved data folder: said, and the bundled sample used instead
    folder.rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    assert f"the run's data {folder.resolve()} is no longer there" in capsys.readouterr().out
    # and int8 refuses to calibrate on images unlike the model's own
    assert main(["export", str(run), "--quantize", "int8"]) == 2
    assert "int8 needs images like the model's own" in capsys.readouterr().err


def test_a_stale_export_in_a_run_folder_is_refused(fitted, exported, tmp_path, capsys) -> None:
    """model.onnx exported from weights the folder no longer holds answers as the old
    model: --runtime onnx on the folder says so instead."""
    run = tmp_path / "run"
    fitted.save(run)
    ImageClassifier.load(run).export(run / "model.onnx", images=colour_data(per_class=2, seed=4))
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8), (200, 0, 0)).save(image)
    assert main(["predict", str(run), str(image), "--runtime", "onnx"]) == 0
    retrained = ImageClassifier.load(run)
    with torch.no_grad():
        retrained.model_.head.weight.mul_(2)  # other weights, saved without ModelFolder
    retrained.save(run)
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--runtime", "onnx"]) == 2
    assert "was exported from an earlier model" in capsys.readouterr().err


def test_a_target_that_is_not_onnx_is_refused(fitted, tmp_path) -> None:
    """--out model.safetensors would overwrite the model's own weights."""
    from headstart.errors import OutputError

    fitted.save(tmp_path / "run")
    weights = tmp_path / "run" / "model.safetensors"
    before = weights.read_bytes()
    with pytest.raises(OutputError, match=r"must end in \.onnx"):
        fitted.export(weights)
    assert weights.read_bytes() == before


def test_cli_export_errors_name_what_is_wrong(fitted, tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty)]) == 2
    assert "not a headstart model folder" in capsys.readouterr().err

    model = tmp_path / "model"
    fitted.save(model)
    assert main(["export", str(model), "--opset", "7"]) == 2
    assert "--opset must be an int in 18.." in capsys.readouterr().err

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["export", str(model), "--out", str(blocker / "model.onnx")]) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err

    (model / "model.safetensors").write_bytes(b"\0" * 64)
    assert main(["export", str(model)]) == 2
    assert "the file is damaged or was replaced" in capsys.readouterr().err
    assert not (model / "model.onnx").exists()


def test_runtime_flags_are_checked(exported, tmp_path, capsys) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["predict", str(exported), str(image), "--device", "cpu"]) == 0  # it is
    capsys.readouterr()
    assert main(["predict", str(exported), str(image), "--device", "cuda"]) == 2
    assert "--device cuda applies to --runtime torch" in capsys.readouterr().err
    assert main(["predict", str(exported), str(image), "--runtime", "torch"]) == 2
    assert "is an ONNX file (use --runtime onnx)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(image), "--runtime", "onnx"]) == 2
    assert "holds no model.onnx" in capsys.readouterr().err
    not_onnx = tmp_path / "fake.onnx"
    not_onnx.write_text("hello")
    assert main(["predict", str(not_onnx), str(image)]) == 2
    assert "not a model ONNX Runtime can run" in capsys.readouterr().err
