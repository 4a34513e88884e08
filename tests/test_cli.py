"""The command line, run in-process."""

from __future__ import annotations

import re

import pytest

from headstart.cli import main


def test_backbones_lists_bundled_lite0(capsys):
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("tf_efficientnet_lite0"))
    assert "bundled" in line and "yes" in line and "224" in line


def test_demo_prints_a_real_accuracy_and_reuses_features(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    assert main(["demo", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "computed" in out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1))
    assert 50.0 < accuracy <= 100.0  # 10 classes: chance is 10 %

    assert main(["demo", "--image-size", "64"]) == 0
    again = capsys.readouterr().out
    assert again.count("from cache") == 2
    assert float(re.search(r"test accuracy: ([\d.]+)%", again).group(1)) == accuracy


def test_unknown_backbone_is_one_line_and_exit_2(capsys):
    assert main(["demo", "--backbone", "tf_efficientnet_lite9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("headstart: error:")
    assert "tf_efficientnet_lite9" in err
    assert len(err.strip().splitlines()) == 1


def test_typo_in_a_flag_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--image-sise", "64"])
    assert exited.value.code == 2
    assert "--image-sise" in capsys.readouterr().err
