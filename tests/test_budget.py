"""Training within a budget (issue 25): estimates said before the long steps, a plan
chosen from them, a stop at the budget that keeps a loadable model, and the record in
headstart.json."""

from __future__ import annotations

import io
import json

import pytest
from fixtures_images import colour_folder

from headstart.cli import main
from headstart.cli.progress import ProgressPrinter
from headstart.errors import ConfigError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.job import TrainingJob
from headstart.job.budget import parse_budget
from headstart.train.callbacks import Callback

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]


class Notes(Callback):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_note(self, text: str) -> None:
        self.lines.append(text)

    def on_estimate(self, step: str, seconds: float, basis: str) -> None:
        self.lines.append(f"estimate {step} {seconds}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return colour_folder(tmp_path_factory.mktemp("budget") / "colours", per_class=8)


def _train(args, tmp_path, capsys):
    code = main(["train", *args, "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_the_estimate_is_printed_before_the_long_step_starts(data, tmp_path, capsys, monkeypatch):
    import sys

    from headstart.cli import common

    # progress to stdout beside the estimates, so that their order shows
    monkeypatch.setattr(common, "ProgressPrinter", lambda *a: ProgressPrinter(*a, sys.stdout))
    code, lines, _ = _train([str(data), *TINY, "--out", str(tmp_path / "m")], tmp_path, capsys)
    assert code == 0
    estimate = next(i for i, x in enumerate(lines) if x.startswith("estimate: extraction ~"))
    first_features = next(i for i, x in enumerate(lines) if x.startswith("features train:"))
    assert estimate < first_features
    assert "on this machine (" in lines[estimate] and "timed" in lines[estimate]
    test_estimate = next(i for i, x in enumerate(lines) if x.startswith("estimate: test pass ~"))
    assert test_estimate > first_features  # said when the test pass starts


def test_a_log_line_shows_the_time_elapsed_and_left():
    stream = io.StringIO()
    printer = ProgressPrinter("features train", "images", stream)
    for done in range(1, 11):
        printer(done, 10)
    lines = stream.getvalue().splitlines()
    assert "s left)" in lines[1] and lines[1].count("s") >= 2  # elapsed and left
    assert "left" not in lines[-1]  # done: nothing left to say


@pytest.mark.parametrize("bad", ["10 minutes", "-5", "0", "1d", "m", "nan"])
def test_bad_budget_strings_are_refused_naming_budget(data, tmp_path, capsys, bad):
    code, _, err = _train([str(data), *TINY, "--budget", bad], tmp_path, capsys)
    assert code != 0
    assert "--budget takes a time: 90s, 10m, 1h or plain seconds" in err
    with pytest.raises(ConfigError, match=r"^budget takes a time"):  # the API's name
        TrainingJob(data, budget=bad).check()


def test_budget_strings_in_seconds_minutes_and_hours():
    given = ("90s", "10m", "1h", "45", 30, "1.5m")
    assert [parse_budget(v) for v in given] == [90, 600, 3600, 45, 30, 90]


def test_a_budget_too_small_for_anything_names_the_smallest_option(data, tmp_path):
    job = TrainingJob(data, backbone="test_efficientnet", weights="none",
                      config={"image_size": 32}, budget=0.001, out=tmp_path / "m")  # fmt: skip
    notes = Notes()
    with pytest.raises(ConfigError) as raised:
        job.run(notes)
    assert [x.endswith("too long") for x in notes.lines if x.startswith("  ")] == [True] * 3
    text = str(raised.value)
    assert "too small for any option here: the smallest, feature extraction " in text
    assert "(test_efficientnet 32 px), is estimated at" in text and "on this machine" in text
    assert not (tmp_path / "m" / "headstart.json").exists()


def test_headstart_json_records_the_choice_and_each_parts_time(data, tmp_path):
    notes = Notes()
    job = TrainingJob(data, backbone="test_efficientnet", weights="none",
                      config={"image_size": 32}, budget="5m", out=tmp_path / "m")  # fmt: skip
    job.run(notes)
    record = json.loads((tmp_path / "m" / "headstart.json").read_text())["budget"]
    assert record["budget_seconds"] == 300
    # 8 images a class (< 50): feature extraction comes before fine-tuning, and fits
    assert record["chosen"] == "feature extraction"
    assert [o["name"] for o in record["options"]][0] == "feature extraction"
    assert set(record["parts"]) == {"fit", "test pass"}
    for part in record["parts"].values():
        assert part["estimate_seconds"] >= 0 and part["actual_seconds"] > 0
    assert record["total_seconds"] < 300 and record["cut"] == []
    chosen = next(line for line in notes.lines if line.startswith("chosen: "))
    assert "the most accurate expected" in chosen
    assert any("~" in line and line.endswith("chosen") for line in notes.lines)


def test_a_fine_tune_stopped_at_the_budget_keeps_a_loadable_model_and_says_so(
    data, tmp_path, capsys, monkeypatch
):
    from headstart.train.deadline import Deadline

    monkeypatch.setattr(Deadline, "remaining", lambda self: 0.0)  # no time for epoch 2
    out = tmp_path / "m"
    code, lines, _ = _train(
        [str(data), *TINY, "--strategy", "fine-tune", "--budget", "10m", "--out", str(out)],
        tmp_path,
        capsys,
    )
    assert code == 0
    cut = [x for x in lines if "stopped at the budget after epoch 1 of" in x]
    assert cut and "kept the" in cut[0]
    meta = json.loads((out / "headstart.json").read_text())
    assert meta["strategy"] == "fine-tune" and len(meta["budget"]["cut"]) == 1
    assert [h["epoch"] for h in meta["history"] if h["stage"] == "fine-tune"] == [1]
    clf = ImageClassifier.load(out)
    assert len(clf.predict(list(data.glob("*/*.png"))[:2])) == 2


def test_budget_with_a_strategy_keeps_to_it_or_refuses_naming_why(data, tmp_path, capsys):
    code, lines, _ = _train(
        [str(data), *TINY, "--strategy", "fine-tune", "--budget", "10m",
         "--out", str(tmp_path / "ft")], tmp_path, capsys)  # fmt: skip
    assert code == 0
    plan = [x for x in lines if x.startswith("  ") and x.rstrip().endswith(("chosen", "fits"))]
    assert plan and all(x.strip().startswith("fine-tune") for x in plan)
    code, _, err = _train([str(data), *TINY, "--strategy", "scratch", "--budget", "1m"],
                          tmp_path, capsys)  # fmt: skip
    assert code != 0
    assert "--budget chooses among feature extraction, an ensemble and fine-tuning" in err
    assert "--strategy 'scratch'" in err or "--strategy scratch" in err
    with pytest.raises(ConfigError, match="leave ensemble out"):
        TrainingJob(data, budget="1m", ensemble=2).check()
