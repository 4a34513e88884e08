"""The command line, run in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_images import colour_folder, noise_folder
from PIL import Image

from headstart.cli import main


def test_backbones_lists_bundled_lite0(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("tf_efficientnet_lite0"))
    assert "bundled" in line and "yes" in line and "224" in line


def test_demo_compares_the_strategies_and_writes_a_report(tmp_path, monkeypatch, capsys):
    """The demo's real pipeline on a shrunken sample (the full demo is a benchmark)."""
    from headstart.cli import compare as compare_command
    from headstart.data import idx, split

    train, test = idx.load_sample()
    small = (
        split.sample_per_class(train, 10, seed=0),
        split.sample_per_class(test, 3, seed=0),
    )
    monkeypatch.setattr(idx, "load_sample", lambda: small)
    monkeypatch.setattr(
        compare_command, "DEMO_OVERRIDES", {"fine-tune": {"epochs": 1}, "scratch": {"epochs": 1}}
    )
    out = tmp_path / "demo"
    args = ["demo", "--image-size", "32", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for strategy in ("scratch", "feature-extraction", "fine-tune"):
        assert f"{strategy}/k=10/seed=0: test accuracy" in printed
    assert (
        "summary:" in printed and "labels per class 30 skipped" in (out / "report.md").read_text()
    )
    for name in ("results.json", "report.md", "report.html", "accuracy_vs_labels.png"):
        assert (out / name).is_file(), name

    assert main(args) == 0  # a second run reuses every finished run
    assert capsys.readouterr().out.count("reused from an earlier run") == 3


def test_unknown_backbone_is_one_line_and_exit_2(capsys, tmp_path):
    folder = _write_folder(tmp_path / "imgs", per_class=6)
    out = tmp_path / "run"
    assert (
        main(["train", str(folder), "--backbone", "tf_efficientnet_lite9", "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("headstart: error:")
    assert "Unknown backbone 'tf_efficientnet_lite9'" in err
    assert len(err.strip().splitlines()) == 1


def test_typo_in_a_flag_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--image-sise", "64"])
    assert exited.value.code == 2
    assert "--image-sise" in capsys.readouterr().err


def test_unknown_backbone_fails_before_any_image_is_loaded(tmp_path, capsys):
    folder = _write_folder(tmp_path / "imgs", per_class=6)
    code = main(["compare", str(folder), "--backbone", "resnet5O", "--out", str(tmp_path / "o")])
    assert code == 2
    captured = capsys.readouterr()
    assert "Unknown backbone 'resnet5O'" in captured.err
    assert "offline" not in captured.err and "data:" not in captured.out


_write_folder = colour_folder


TINY_ARGS = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]


def test_train_evaluate_predict_round_trip(tmp_path, capsys):
    folder = _write_folder(tmp_path / "imgs", broken=True)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(folder),
            "--strategy",
            "fine-tune",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            *TINY_ARGS,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "not-an-image.jpg" in printed  # the bad file is named, the run goes on
    assert "plan: fine-tune" in printed and "BatchNorm" in printed
    assert "test balanced accuracy" in printed and ", accuracy " in printed
    assert (out / "model.safetensors").is_file() and (out / "headstart.json").is_file()
    assert not (out / "checkpoints").exists()
    meta = json.loads((out / "headstart.json").read_text())
    assert meta["classes"] == ["blue", "green", "red"]
    assert 0.0 <= meta["metrics"]["test"]["accuracy"] <= 1.0

    assert main(["evaluate", str(out), str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and "confusion matrix" in printed
    assert sorted(p.name for p in out.iterdir()) == ["headstart.json", "model.safetensors"]
    report = tmp_path / "evaluation"  # files are written only where --out says
    assert main(["evaluate", str(out), str(folder), "--out", str(report)]) == 0
    with Image.open(report / "confusion_matrix.png") as png:
        assert png.format == "PNG"
    evaluation = json.loads((report / "evaluation.json").read_text())
    assert evaluation["n"] == 30
    capsys.readouterr()

    image = folder / "green" / "0.png"
    assert main(["predict", str(out), str(image), "--top-k", "2", "--format", "json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert predictions[0]["image"] == str(image)
    assert len(predictions[0]["predictions"]) == 2
    probabilities = [p["probability"] for p in predictions[0]["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)

    assert main(["predict", str(out), str(folder / "red"), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "image,rank,class,probability"
    assert len(captured.out.splitlines()) == 1 + 10 * 3  # 10 good images, top-3 each
    assert "skipped" in captured.err and "not-an-image.jpg" in captured.err
    # --strict means one thing in every command: an unreadable image is an error
    assert main(["predict", str(out), str(folder / "red"), "--strict"]) == 2
    assert "not-an-image.jpg" in capsys.readouterr().err


def test_predict_on_a_missing_model_folder_is_one_line(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope"), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "not a headstart model folder" in err and len(err.strip().splitlines()) == 1


def test_strict_stops_before_training_naming_the_file(tmp_path, capsys):
    folder = _write_folder(tmp_path / "imgs", broken=True)
    code = main(["train", str(folder), "--strict", "--out", str(tmp_path / "r"), *TINY_ARGS])
    assert code == 2
    assert "not-an-image.jpg" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_compare_command_writes_results_and_report(tmp_path, capsys):
    folder = _write_folder(tmp_path / "imgs", per_class=8)
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            str(folder),
            "--labels-per-class",
            "3,all",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--no-cache",
            *TINY_ARGS,
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 6
    assert {r["status"] for r in results["runs"]} == {"ok"}
    assert "What the numbers say" in (out / "report.md").read_text()


def test_compare_rejects_a_bad_size_list(tmp_path, capsys):
    folder = _write_folder(tmp_path / "imgs", per_class=4)
    assert main(["compare", str(folder), "--labels-per-class", "10,lots"]) == 2
    assert "'lots'" in capsys.readouterr().err


def _idx(path, array):
    dims = array.shape
    header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_train_and_evaluate_on_an_idx_folder(tmp_path, capsys):
    """MNIST-style files: train uses train-*, evaluate uses the t10k-* test files."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for split, n in (("train", 30), ("t10k", 12)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 50, size=(n, 12, 12))
        images[:, : 4 * 1, :] += (labels[:, None, None] == 0) * 200
        images[:, 4:8, :] += (labels[:, None, None] == 1) * 200
        images[:, 8:, :] += (labels[:, None, None] == 2) * 200
        _idx(folder / f"{split}-images-idx3-ubyte", images.clip(0, 255))
        _idx(folder / f"{split}-labels-idx1-ubyte", labels)
    out = tmp_path / "run"
    assert main(["train", str(folder), "--out", str(out), *TINY_ARGS]) == 0
    assert main(["evaluate", str(out), str(folder), "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["n"] == 12


def test_cache_command_lists_and_clears(tmp_path, capsys):
    from headstart.backbones.registry import create_backbone
    from headstart.data.arrays import from_arrays
    from headstart.features.cache import FeatureCache, cached_features

    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 20, 20, 3), dtype=np.uint8)
    backbone = create_backbone("test_efficientnet", weights="none", image_size=32)
    cached_features(backbone, from_arrays(pixels, [0, 1] * 3), FeatureCache(tmp_path / "c"))
    assert main(["cache", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "1 entry for 1 model," in out and "6 images" in out and "--clear" in out
    (model,) = [p.name for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert f"model {model[:8]}  final" in out

    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "--older-than", "3"]) == 2
    assert "--older-than DAYS only applies with --clear" in capsys.readouterr().err
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "--clear", "--older-than", "-2"]) == 2
    assert "--older-than" in capsys.readouterr().err

    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "--clear", "--older-than", "1"]) == 0
    assert "removed 0 entries" in capsys.readouterr().out
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "--clear"]) == 0
    assert "removed 1 entry" in capsys.readouterr().out
    assert FeatureCache(tmp_path / "c").entries() == []


def test_a_reader_that_stops_reading_is_not_an_error(monkeypatch, capsys):
    """`headstart backbones | head -1`: the pipe closes under us; exit 0, no traceback."""

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["backbones"]) == 0
    assert capsys.readouterr().err == ""


def test_errors_speak_the_flags_on_the_command_line(tmp_path, capsys, monkeypatch):
    """The library names parameters; the CLI words them as its flags."""
    folder = _write_folder(tmp_path / "imgs", per_class=6)
    out = str(tmp_path / "run")
    assert main(["train", str(folder), "--head-lr", "-1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--head-lr must be > 0. Got -1.0 instead." in err
    assert "TrainConfig" not in err and "head_lr" not in err

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf-home"))
    assert (
        main(["train", str(folder), "--backbone", "resnet18", "--weights", "hub"] + ["--out", out])
        == 2
    )
    err = capsys.readouterr().err
    assert "offline" in err and "--weights set to a .safetensors or .pth file" in err

    assert main(["train", str(folder), "--labels-per-class", "50", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "50 images per class asked for" in err and "Lower --labels-per-class" in err


# ------------------------------------------- names that would drive the terminal (issue 11.3)

NEWLINE_NAME, ESCAPE_NAME = "a\nb.png", "\x1b[31mred.png"


def _hostile_names(root, rng_seed=0):
    """Two classes; each holds a file named with a newline and one with an escape code."""
    rng = np.random.default_rng(rng_seed)
    for label in ("one", "\x1b[32mtwo"):
        (root / label).mkdir(parents=True)
        for name in (NEWLINE_NAME, ESCAPE_NAME, "plain.png", "more.png"):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / name)
    return root


def _no_raw_controls(text):
    assert "\x1b" not in text, text
    return text


def test_text_output_escapes_control_characters_and_json_stays_exact(tmp_path, capsys):
    data = _hostile_names(tmp_path / "data")
    (data / "one" / "\x1b]0;pwned\x07bad.png").write_bytes(b"<html>not an image</html>")
    out = tmp_path / "model"
    args = ["train", str(data), "--backbone", "test_efficientnet", "--weights", "none"]
    assert main([*args, "--image-size", "32", "--no-cache", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    _no_raw_controls(captured.out + captured.err)
    assert "\\x1b[32mtwo" in captured.out  # the data line names the class, escaped
    assert "\\x1b]0;pwned\\x07bad.png" in captured.out  # the load report's skipped file

    images = [str(data / "one" / NEWLINE_NAME), str(data / "one" / ESCAPE_NAME)]
    bad = str(data / "one" / "\x1b]0;pwned\x07bad.png")
    assert main(["predict", str(out), *images, bad]) == 0
    captured = capsys.readouterr()
    rows = _no_raw_controls(captured.out).splitlines()
    assert len(rows) == 2 and rows[0].startswith(str(data / "one" / "a\\nb.png") + ": ")
    assert len(_no_raw_controls(captured.err).strip().splitlines()) == 1  # the skipped file

    assert main(["predict", str(out), *images, "--format", "json"]) == 0
    assert [p["image"] for p in json.loads(capsys.readouterr().out)] == images


def test_check_text_escapes_names_and_check_json_keeps_them(tmp_path, capsys):
    data = _hostile_names(tmp_path / "data")
    copy = data / "one" / ("copy\x1b[2J" + NEWLINE_NAME)
    copy.write_bytes((data / "one" / NEWLINE_NAME).read_bytes())  # a duplicate finding
    report = tmp_path / "report"
    assert main(["check", str(data), "--out", str(report)]) == 0
    printed = _no_raw_controls(capsys.readouterr().out)
    assert "copy\\x1b[2Ja\\nb.png" in printed
    _no_raw_controls((report / "check.txt").read_text())
    details = json.loads((report / "check.json").read_text())["findings"][0]["details"]
    assert any(str(copy) in line for line in details)


def test_an_error_naming_a_hostile_path_is_one_escaped_line(tmp_path, capsys):
    assert main(["check", str(tmp_path / "gone\x1b[31m")]) == 2
    err = capsys.readouterr().err
    assert len(_no_raw_controls(err).strip().splitlines()) == 1 and "gone\\x1b[31m" in err


# ------------------------------------------------- --max-pixels on every command (issue 11.4)


def _with_a_large_image(root):
    """Two classes of 16x16 images and one 40x40 (1,600 px) image in the first: above a
    lowered limit of 1,000 px, as a 169-Mpx clip-art PNG is above the default."""
    noise_folder(root, ("one", "two"), seed=3)
    rng = np.random.default_rng(4)
    large = root / "one" / "large.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(large)
    return root, large


def test_max_pixels_is_a_flag_and_skips_are_worded_as_it(tmp_path, capsys):
    data, large = _with_a_large_image(tmp_path / "data")
    assert main(["check", str(data), "--max-pixels", "1000"]) == 0
    printed = capsys.readouterr().out
    assert "large.png" in printed and "--max-pixels" in printed
    assert "DecodeOptions" not in printed
    assert main(["check", str(data), "--max-pixels", "2000", "--strict"]) == 0  # allowed now
    capsys.readouterr()

    out = tmp_path / "model"
    train = ["train", str(data), "--backbone", "test_efficientnet", "--weights", "none"]
    train += ["--image-size", "32", "--no-cache", "--out", str(out)]
    assert main([*train, "--max-pixels", "1000", "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "large.png" in err and "--max-pixels" in err
    assert main([*train, "--max-pixels", "1000"]) == 0
    printed = capsys.readouterr().out
    assert "large.png" in printed and "--max-pixels" in printed

    # The model keeps the limit it was trained with; predict and evaluate may raise it.
    assert main(["predict", str(out), str(large)]) == 2
    err = capsys.readouterr().err
    assert "large.png" in err and "--max-pixels" in err and "DecodeOptions" not in err
    assert main(["predict", str(out), str(large), "--max-pixels", "2000"]) == 0
    assert capsys.readouterr().out.startswith(f"{large}: ")
    assert main(["evaluate", str(out), str(data), "--max-pixels", "2000"]) == 0
    assert "skipped" not in capsys.readouterr().out

    assert main(["check", str(data), "--max-pixels", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("headstart: error: --max-pixels must be an int > 0") and "0" in err
