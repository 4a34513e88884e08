"""``train --out``: a model folder is never replaced by surprise, never shared by two runs,
found unwritable before the training rather than after it, and settings and weights
are checked before a single image is decoded."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
from filelock import FileLock
from fixtures_images import colour_folder

from headstart.cli import main

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]


def _folder(root, per_class=6):
    return colour_folder(root, per_class)


@pytest.fixture
def no_loading(monkeypatch):
    """A spy on the image loader: any call is recorded, and fails the run at once (so a
    test of an early check never trains, or allocates, when the check is missing)."""
    from headstart.data import layout

    calls: list = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("images were loaded before the check")

    monkeypatch.setattr(layout, "load_images", refuse)
    return calls


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("headstart: error:"), captured
    assert len(err.splitlines()) == 1, err
    assert "data:" not in captured.out
    return err


# ----------------------------------------------------------------- 1. a model folder


def test_a_folder_holding_a_model_is_refused_without_overwrite(tmp_path, capsys, no_loading):
    out = tmp_path / "run"
    out.mkdir()
    (out / "headstart.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"old")
    code = main(["train", str(_folder(tmp_path / "imgs")), "--out", str(out), *TINY])
    assert code == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "--overwrite" in err
    assert (out / "model.safetensors").read_bytes() == b"old"  # untouched
    assert no_loading == []


def test_overwrite_replaces_the_model_and_clears_what_described_the_old_one(tmp_path, capsys):
    folder = _folder(tmp_path / "imgs")
    out = tmp_path / "run"
    out.mkdir()
    (out / "headstart.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"old")
    (out / "evaluation.json").write_text("{}")
    (out / "confusion_matrix.png").write_bytes(b"png")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "checkpoint-head.pt").write_bytes(b"another run")
    args = ["train", str(folder), "--out", str(out), "--overwrite", "--no-cache", *TINY]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["headstart.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() != b"old"


def test_a_second_train_to_a_folder_in_use_fails_at_once(tmp_path, capsys, no_loading):
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / ".headstart.lock"), timeout=0):  # what a running train holds
        code = main(["train", str(_folder(tmp_path / "imgs")), "--out", str(out), *TINY])
    assert code == 2
    err = _one_line_error(capsys)
    assert str(out) in err and "another" in err
    assert no_loading == []


# ----------------------------------------------------------- 2. a folder not writable


def test_an_out_that_cannot_be_a_folder_fails_before_loading(tmp_path, capsys, no_loading):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "run"
    code = main(["train", str(_folder(tmp_path / "imgs")), "--out", str(out), *TINY])
    assert code == 2
    assert str(out) in _one_line_error(capsys)
    assert no_loading == []


def test_a_failed_final_save_keeps_the_model_and_says_where(tmp_path, capsys, monkeypatch):
    from headstart.estimator.image_classifier import ImageClassifier

    out = tmp_path / "run"
    save = ImageClassifier.save

    def full_disk_at_out(self, folder):
        if os.path.realpath(folder) == os.path.realpath(out):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, folder)

    monkeypatch.setattr(ImageClassifier, "save", full_disk_at_out)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where it is rescued
    (tmp_path / "tmp").mkdir()
    args = ["train", str(_folder(tmp_path / "imgs")), "--out", str(out), "--no-cache", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith("headstart: error:") and str(out) in err and "No space left" in err
    kept = [p for p in (tmp_path / "tmp").iterdir() if str(p) in err]
    assert len(kept) == 1, err
    assert ImageClassifier.load(kept[0]).classes_ == ["blue", "green", "red"]


def test_a_write_that_fails_names_the_file(tmp_path):
    from headstart._internal.atomic import atomic_write

    def full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as failed:
        atomic_write(target, full)
    assert failed.value.errno == errno.ENOSPC
    assert str(target) in str(failed.value)


# -------------------------------------------------- 3. settings and weights come first


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--weights", "hub"], "offline"),
        (["--weights", "bundled"], "test_efficientnet"),
        (["--weights", "none", "--strategy", "fine-tune", "--freeze-groups", "99"], "99"),
        (["--weights", "none", "--layers", "stage9"], "stage9"),
    ],
    ids=["hub-offline", "no-bundled", "freeze-groups", "layers"],
)
def test_weights_and_settings_fail_before_any_image_is_decoded(
    tmp_path, capsys, monkeypatch, no_loading, flags, said
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    out = tmp_path / "run"
    args = ["train", str(_folder(tmp_path / "imgs")), "--out", str(out)]
    code = main([*args, "--backbone", "test_efficientnet", "--image-size", "32", *flags])
    assert code == 2
    assert said in _one_line_error(capsys)
    assert no_loading == []


def test_fit_checks_layers_against_the_backbone_before_any_work(tmp_path, monkeypatch):
    from headstart.data.loaders import load_folder
    from headstart.errors import ConfigError
    from headstart.estimator import image_classifier
    from headstart.estimator.image_classifier import ImageClassifier
    from headstart.train.config import TrainConfig

    train = load_folder(_folder(tmp_path / "imgs", per_class=20))
    carved: list = []
    monkeypatch.setattr(
        image_classifier,
        "carve_validation",
        lambda train, config: carved.append(1) or (train, None),
    )
    config = TrainConfig(image_size=32, layers=("stage9",))
    clf = ImageClassifier("test_efficientnet", config=config, weights="none")
    with pytest.raises(ConfigError, match="stage9"):
        clf.fit(train)
    assert carved == []


# -------------------------------------------------------------------- 4. image size


def test_an_image_size_beyond_the_bound_is_refused_by_name(tmp_path, capsys, no_loading):
    code = main(
        ["train", str(_folder(tmp_path / "imgs")), "--out", str(tmp_path / "run"), *TINY[:4]]
        + ["--image-size", "100000"]
    )
    assert code == 2
    err = _one_line_error(capsys)
    assert "--image-size" in err and "100000" in err and "2048" in err
    assert no_loading == []


def test_config_and_create_backbone_bound_the_image_size():
    from headstart.backbones.registry import create_backbone
    from headstart.errors import ConfigError
    from headstart.train.config import TrainConfig

    with pytest.raises(ConfigError, match="image_size.*2048.*100000"):
        TrainConfig(image_size=100000)
    with pytest.raises(ConfigError, match="image_size.*2048.*100000"):
        create_backbone("test_efficientnet", "none", image_size=100000)
    assert TrainConfig(image_size=2048).image_size == 2048
