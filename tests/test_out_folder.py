"""``train --out``: a model folder is never replaced by surprise, never shared by two runs,
found unwritable before the training rather than after it, and settings and weights
are checked before a single image is decoded."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from PIL import Image

from headstart.cli import main

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]


def _folder(root, per_class=6):
    rng = np.random.default_rng(0)
    for label, channel in (("red", 0), ("green", 1), ("blue", 2)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(24, 24, 3), dtype=np.uint8)
            pixels[:, :, channel] += 150
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


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


# ----------------------------------------------------------- 2. a folder not writable


def test_a_write_that_fails_names_the_file(tmp_path):
    from headstart._internal.atomic import atomic_write

    def full(handle):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as failed:
        atomic_write(target, full)
    assert failed.value.errno == errno.ENOSPC
    assert str(target) in str(failed.value)
