"""One vocabulary: each flag means one thing in every command that has it."""

from __future__ import annotations

from dataclasses import fields

import pytest
from fixtures_images import noise_folder

from headstart.cli import build_parser, main
from headstart.cli import compare as compare_command
from headstart.cli.common import cli_words
from headstart.train.config import TrainConfig

BACKBONE_COMMANDS = ("train", "compare", "demo", "evaluate", "predict")


def _options(command: str) -> dict[str, object]:
    """Each long flag of ``command`` with its default."""
    parser = build_parser().parse_args(_minimal(command)).command_parser
    return {
        option: action.default
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--")
    }


def _minimal(command: str) -> list[str]:
    positional = {"train": ["d"], "compare": ["d"], "check": ["d"], "evaluate": ["m", "d"]}
    positional["predict"] = ["m", "i"]
    return [command, *positional.get(command, [])]


def test_every_config_field_is_a_train_flag_with_its_own_help():
    train = build_parser().parse_args(["train", "d"]).command_parser
    helps = {a.dest: a.help for a in train._actions}
    for field in fields(TrainConfig):
        assert helps[field.name] == field.metadata["help"], field.name


@pytest.mark.parametrize("command", BACKBONE_COMMANDS)
def test_device_and_batch_size_wherever_a_backbone_runs(command):
    options = _options(command)
    assert "--device" in options and "--batch-size" in options


@pytest.mark.parametrize("command", ("train", "compare", "demo", "cache"))
def test_cache_dir_wherever_features_are_cached(command):
    assert "--cache-dir" in _options(command)


def test_image_size_has_one_default_in_train_and_compare():
    """None: the backbone's own size, so compare measures what train does."""
    assert _options("train")["--image-size"] is None
    assert _options("compare")["--image-size"] is None


@pytest.mark.parametrize("command", ("train", "compare", "check", "evaluate", "predict"))
def test_strict_means_one_thing(command):
    parser = build_parser().parse_args(_minimal(command)).command_parser
    (strict,) = [a for a in parser._actions if "--strict" in a.option_strings]
    assert strict.help == "an unreadable image is an error (exit 2), not skipped with a note"


def test_out_follows_one_rule():
    """Commands whose result is files write to ./headstart-<command> by default; commands
    that report write files only when --out names a folder."""
    for command in ("train", "compare", "demo"):
        assert str(_options(command)["--out"]) == f"headstart-{command}"
    for command in ("check", "evaluate"):
        assert _options(command)["--out"] is None


def test_words_name_flags_by_their_first_long_form():
    words = cli_words(build_parser().parse_args(["train", "d"]).command_parser)
    assert words["head_lr"] == "--head-lr"
    assert words["lp_ft"] == "--lp-ft"
    assert words["labels_per_class"] == "--labels-per-class"


def _folder(root, per_class=6):
    return noise_folder(root, per_class=per_class, high=255)


@pytest.mark.parametrize("value", ["0", "-3", "ten", "10,x"])
def test_labels_per_class_refuses_what_is_not_a_size(tmp_path, capsys, value):
    folder = _folder(tmp_path / "data")
    for command in (["train", str(folder)], ["compare", str(folder)]):
        assert main([*command, "--labels-per-class", value, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert "--labels-per-class takes positive ints or 'all'" in err, err
    assert not (tmp_path / "o").exists()


def test_train_takes_one_size(tmp_path, capsys):
    folder = _folder(tmp_path / "data")
    assert main(["train", str(folder), "--labels-per-class", "2,4"]) == 2
    assert "takes one size here" in capsys.readouterr().err


@pytest.mark.parametrize(
    "strategy, flag, value, reason",
    [
        ("fine-tune", "--head-lr", "0.01", "with --lp-ft the head is fitted by the L-BFGS probe"),
        ("feature-extraction", "--epochs", "5", "the linear head is solved by L-BFGS"),
        ("feature-extraction", "--base-lr", "0.01", "the whole base stays frozen"),
        ("scratch", "--freeze-groups", "2", "scratch trains every layer"),
    ],
)
def test_a_flag_the_strategy_would_ignore_is_refused(
    tmp_path, capsys, strategy, flag, value, reason
):
    folder = _folder(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", str(folder), "--strategy", strategy, flag, value, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{flag} is not used: {reason}" in err, err
    assert "head_lr" not in err and "TrainConfig" not in err
    assert not out.exists()  # refused before anything was loaded or written


def test_a_flag_a_strategy_would_use_is_accepted(tmp_path, capsys, monkeypatch):
    """--head-lr is used by fine-tune without LP-FT: it reaches the config."""
    seen = {}

    def fake_fit(self, train, **kwargs):
        seen["config"] = self.config
        raise KeyboardInterrupt  # stop before any training

    from headstart.estimator.image_classifier import ImageClassifier

    monkeypatch.setattr(ImageClassifier, "fit", fake_fit)
    folder = _folder(tmp_path / "data")
    args = ["train", str(folder), "--strategy", "fine-tune", "--no-lp-ft", "--head-lr", "0.01"]
    assert main([*args, "--out", str(tmp_path / "r"), "--weights", "none"]) == 130
    assert seen["config"].head_lr == 0.01 and seen["config"].lp_ft is False


def _stub_comparison(monkeypatch):
    ran = {}

    def run_comparison(train, test, out, settings, args, description, budget=None):
        ran.update(train=train, test=test, settings=settings, budget=budget)
        return 0

    monkeypatch.setattr(compare_command, "run_comparison", run_comparison)
    return ran


def test_compare_applies_a_setting_to_the_strategies_that_use_it(tmp_path, capsys, monkeypatch):
    ran = _stub_comparison(monkeypatch)
    folder = _folder(tmp_path / "data")
    assert main(["compare", str(folder), "--epochs", "2", "--batch-size", "8"]) == 0
    settings = ran["settings"]
    assert settings.overrides["fine-tune"] == {"epochs": 2, "batch_size": 8}
    assert settings.overrides["scratch"] == {"epochs": 2, "batch_size": 8}
    assert settings.overrides["feature-extraction"] == {"batch_size": 8}
    assert settings.image_size is None  # the backbone's own, as in train
    printed = capsys.readouterr().out
    assert "compare: --epochs applies to scratch, fine-tune (feature-extraction:" in printed


def test_compare_refuses_a_setting_no_strategy_uses(tmp_path, capsys, monkeypatch):
    _stub_comparison(monkeypatch)
    folder = _folder(tmp_path / "data")
    args = ["compare", str(folder), "--strategies", "feature-extraction", "--epochs", "2"]
    assert main(args) == 2
    assert "--epochs is not used" in capsys.readouterr().err


def test_compare_seeds_its_split_as_train_does(tmp_path, monkeypatch):
    """--seeds 3 draws the same test set as train --seed 3 (the first seed splits)."""
    from headstart.data.layout import load_images

    ran = _stub_comparison(monkeypatch)
    folder = _folder(tmp_path / "data", per_class=10)
    assert main(["compare", str(folder), "--seeds", "3,4"]) == 0
    _, expected = load_images(folder, seed=3)
    assert ran["test"].fingerprint() == expected.fingerprint()
    assert main(["compare", str(folder), "--seeds", "5"]) == 0
    assert ran["test"].fingerprint() != expected.fingerprint()


def test_training_settings_are_spelled_as_flags_in_every_command():
    """The demo takes no --head-lr, but its plan's notes still call it that."""
    words = cli_words(build_parser().parse_args(["demo"]).command_parser)
    assert words["head_lr"] == "--head-lr" and words["base_lr"] == "--base-lr"


def _pre_split(root):
    """train/ and test/ class folders, with one unreadable image in test/."""
    for part in ("train", "test"):
        _folder(root / part, per_class=6 if part == "train" else 3)
    (root / "test" / "a" / "broken.png").write_text("not an image")
    return root


def test_strict_fails_evaluate_and_compare_naming_the_file(tmp_path, capsys, monkeypatch):
    data = _pre_split(tmp_path / "data")
    _stub_comparison(monkeypatch)
    assert main(["compare", str(data)]) == 0  # skipped with a note
    assert main(["compare", str(data), "--strict"]) == 2
    assert "broken.png" in capsys.readouterr().err

    model = tmp_path / "model"
    tiny = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]
    assert main(["train", str(data / "train"), "--out", str(model), *tiny]) == 0
    assert main(["evaluate", str(model), str(data)]) == 0
    assert main(["evaluate", str(model), str(data), "--strict"]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_test_size_is_refused_where_the_data_brings_its_own_split(tmp_path, capsys):
    data = _pre_split(tmp_path / "data")
    assert main(["train", str(data), "--test-size", "0.5", "--out", str(tmp_path / "r")]) == 2
    assert "--test-size does not apply" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_test_size_takes_a_share_or_a_count(monkeypatch, tmp_path):
    ran = _stub_comparison(monkeypatch)
    folder = _folder(tmp_path / "data", per_class=10)
    assert main(["compare", str(folder), "--test-size", "4"]) == 0
    assert len(ran["test"]) == 4
    assert main(["compare", str(folder), "--test-size", "0.5"]) == 0
    assert len(ran["test"]) == 10


def test_compare_names_an_unknown_strategy_in_its_own_words(tmp_path, capsys):
    folder = _folder(tmp_path / "data")
    assert main(["compare", str(folder), "--strategies", "feature-extraction,finetune"]) == 2
    err = capsys.readouterr().err
    assert "--strategies takes names among" in err and "ImageClassifier" not in err


def test_a_device_this_machine_lacks_fails_before_any_image_is_read(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    folder = _folder(tmp_path / "data")
    assert main(["train", str(folder), "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert "--device must be" in captured.err and "data:" not in captured.out


def test_predict_refuses_an_empty_batch_and_fails_when_nothing_was_read(tmp_path, capsys):
    data = _pre_split(tmp_path / "data")
    model = tmp_path / "model"
    tiny = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]
    assert main(["train", str(data / "train"), "--out", str(model), *tiny]) == 0
    image = str(data / "test" / "a" / "0.png")
    assert main(["predict", str(model), image, "--batch-size", "0"]) == 2
    assert "--batch-size must be an int >= 1" in capsys.readouterr().err
    assert main(["predict", str(model), str(data / "test" / "a" / "broken.png")]) == 2
    assert main(["predict", str(model), image, str(tmp_path / "missing.png")]) == 0


def test_evaluate_refuses_an_empty_batch_before_loading(tmp_path, capsys):
    data = _pre_split(tmp_path / "data")
    assert main(["evaluate", str(tmp_path / "no-model"), str(data), "--batch-size", "0"]) == 2
    assert "--batch-size must be an int >= 1" in capsys.readouterr().err


def test_last_trial_messages_speak_the_cli_words(tmp_path, capsys):
    """Found in a last new-user trial: an empty folder to predict named predict_files,
    and an empty --layers asked for 'a non-empty tuple'."""
    data = _pre_split(tmp_path / "data")
    model = tmp_path / "model"
    tiny = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]
    assert main(["train", str(data / "train"), "--out", str(model), *tiny]) == 0
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "No image files in" in err and "predict_files" not in err
    assert main(["train", str(data), "--layers", "", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--layers must be one or more layer names" in err and "tuple" not in err
