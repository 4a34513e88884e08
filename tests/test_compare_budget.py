"""compare within a budget (issue 25): every run's estimate said before it starts, the
runs that fit taken most informative first, the rest named with their estimates, a run
stopped at the budget kept and marked, and a budget too small for any run a clear error
naming the smallest."""

from __future__ import annotations

import json
import re

import pytest
from fixtures_images import colour_data, colour_folder, tiny_weights_file

from headstart.cli import main
from headstart.errors import ConfigError
from headstart.evaluation import compare_budget
from headstart.evaluation.compare_budget import BudgetedRun, ComparisonBudget, informative_first
from headstart.evaluation.comparison import CompareCallback, CompareSettings, compare
from headstart.evaluation.report import build_report

TINY = "test_efficientnet"
QUICK = {"epochs": 1, "batch_size": 8, "patience": 0}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights_file(tmp_path_factory.mktemp("w"), seed=7, model=TINY)


@pytest.fixture(scope="module")
def data():
    return colour_data(8, 0), colour_data(3, 1)


def _settings(weights, **changes) -> CompareSettings:
    base = dict(
        strategies=("feature-extraction", "fine-tune"),
        labels_per_class=(4, None),
        backbone=TINY,
        weights=weights,
        image_size=32,
        overrides={"fine-tune": QUICK},
    )
    base.update(changes)
    return CompareSettings(**base)


class Events(CompareCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_note(self, text: str) -> None:
        self.events.append(("note", text))

    def on_estimate(self, step: str, seconds: float, basis: str) -> None:
        self.events.append(("estimate", step))

    def on_run_start(self, run: str, index: int, total: int) -> None:
        self.events.append(("start", run))


def test_the_most_informative_runs_come_first():
    settings = CompareSettings(
        strategies=("scratch", "feature-extraction"), labels_per_class=(4, 10, 30, None),
        seeds=(0, 1),
    )  # fmt: skip
    plan = [(k, s, st, settings.backbone) for k in (4, 10, 30, None) for s in (0, 1)
            for st in settings.strategies]  # fmt: skip
    order = [(k, seed, strategy) for k, seed, strategy, _ in informative_first(plan, settings)]
    # seed 0 first; all labels, then the fewest, then the rest largest first; strategies
    # side by side at each size
    assert order[:8] == [
        (None, 0, "scratch"), (None, 0, "feature-extraction"),
        (4, 0, "scratch"), (4, 0, "feature-extraction"),
        (30, 0, "scratch"), (30, 0, "feature-extraction"),
        (10, 0, "scratch"), (10, 0, "feature-extraction"),
    ]  # fmt: skip
    assert {seed for _, seed, _ in order[8:]} == {1} and len(order) == 16


def test_each_runs_estimate_is_said_before_it_starts(tmp_path, weights, data):
    events = Events()
    results = compare(*data, tmp_path, _settings(weights), callback=events, budget="10m")
    plan = [text for kind, text in events.events if kind == "note" and text.startswith("  ")]
    assert len(plan) == 4 and all(re.search(r"~\S+\s+runs$", line) for line in plan)
    first_start = next(i for i, (kind, _) in enumerate(events.events) if kind == "start")
    assert events.events.index(("note", plan[-1])) < first_start  # the whole plan first
    for rid in [r["id"] for r in results["runs"]]:
        start = events.events.index(("start", rid))
        said = [i for i, (kind, step) in enumerate(events.events)
                if kind == "estimate" and step.startswith(rid + " ")]  # fmt: skip
        assert said and max(said) < start, rid
    record = results["budget"]
    assert record["order"][0] == "feature-extraction/k=all/seed=0"
    assert {r["status"] for r in record["runs"].values()} == {"ran"}
    assert all(
        r["estimate_seconds"] > 0 and r["actual_seconds"] > 0 for r in record["runs"].values()
    )
    assert json.loads((tmp_path / "results.json").read_text())["budget"] == record
    # the label issues section is not estimated: a budget leaves it out, and says so
    assert "label_issues" not in results
    assert any(n.startswith("no label issues section: a budget leaves it out")
               for n in results["notes"])  # fmt: skip


def test_runs_that_do_not_fit_are_skipped_and_named_with_their_estimates(
    tmp_path, weights, data, monkeypatch
):
    def estimate(timer, entry, train, test, settings):
        seconds = 5000.0 if entry[2] == "fine-tune" else 0.5
        return {"fit": (seconds, "fixed"), "test pass": (0.01, "fixed")}

    monkeypatch.setattr(compare_budget, "_estimate", estimate)
    results = compare(*data, tmp_path, _settings(weights), budget="10m")
    assert sorted(r["id"] for r in results["runs"]) == [
        "feature-extraction/k=4/seed=0", "feature-extraction/k=all/seed=0"]  # fmt: skip
    statuses = {rid: r["status"] for rid, r in results["budget"]["runs"].items()}
    assert statuses["fine-tune/k=all/seed=0"] == statuses["fine-tune/k=4/seed=0"] == "skipped"
    skipped = [n for n in results["notes"] if "skipped for the budget" in n]
    assert len(skipped) == 2 and all("estimated 83.3 min" in n for n in skipped)
    build_report(tmp_path)
    assert (
        "fine-tune/k=4/seed=0 skipped for the budget: estimated 83.3 min"
        in (tmp_path / "report.md").read_text()
    )


def test_a_run_stopped_at_the_budget_is_kept_and_says_what_was_cut(
    tmp_path, weights, data, monkeypatch
):
    from headstart.train.deadline import Deadline

    monkeypatch.setattr(Deadline, "remaining", lambda self: 0.0)  # no time for epoch 2
    three = {"fine-tune": {**QUICK, "epochs": 3, "lp_ft": False}}
    settings = _settings(weights, strategies=("fine-tune",), labels_per_class=(None,),
                         overrides=three)  # fmt: skip
    results = compare(*data, tmp_path, settings, budget="10m")
    (run,) = results["runs"]
    assert run["status"] == "ok" and run["epochs"] == 1
    assert "stopped at the budget after epoch 1 of 3" in run["cut"][0]
    assert results["budget"]["runs"][run["id"]]["status"] == "cut"
    assert any(n.startswith(run["id"] + ": ") and "kept the" in n for n in results["notes"])


def test_a_run_the_measured_pace_no_longer_fits_is_skipped():
    budget = ComparisonBudget("100s", CompareCallback())
    done = BudgetedRun((None, 0, "a", "b"), "a/k=all/seed=0", {"fit": (10.0, "")})
    done.actual_seconds = 40.0  # 4x its estimate
    budget.runs = {
        done.id: done,
        "b": BudgetedRun((4, 0, "b", "b"), "b", {"fit": (20.0, "")}),  # 80 s at that pace
        "c": BudgetedRun((4, 0, "c", "b"), "c", {"fit": (5.0, "")}),  # 20 s
    }
    budget.started -= 40.0  # 60 s left
    assert budget.pace() == pytest.approx(4.0)
    assert budget.admit("b") is False and budget.runs["b"].status == "skipped"
    assert "at the pace measured so far (4.0x the estimates)" in budget.notes[-1]
    assert budget.admit("c") is True


def test_a_budget_too_small_for_any_run_names_the_smallest(tmp_path, weights, data):
    events = Events()
    with pytest.raises(ConfigError) as raised:
        compare(*data, tmp_path, _settings(weights), callback=events, budget=0.001)
    text = str(raised.value)
    match = re.search(r"the smallest, (\S+), is estimated at (\S+) on this machine", text)
    assert match and text.startswith("budget 0.0s is too small for any run of this comparison")
    plan = {line.split()[0]: line.split()[1] for kind, line in events.events
            if kind == "note" and line.startswith("  ")}  # fmt: skip
    ends = ("too long", "the budget was spent timing the runs before it")
    assert len(plan) == 4 and all(line.endswith(ends) for _, line in events.events[1:5])
    assert plan[match[1]] == "~" + match[2]  # the one it names, with the estimate it said
    assert not any(kind == "start" for kind, _ in events.events)
    assert not (tmp_path / "results.json").exists()


def test_compare_budget_on_the_command_line(tmp_path, weights, capsys):
    folder = colour_folder(tmp_path / "colours", per_class=8)
    args = ["compare", str(folder), "--backbone", TINY, "--weights", weights, "--image-size",
            "32", "--strategies", "feature-extraction", "--labels-per-class", "4,all",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "cmp")]  # fmt: skip
    assert main([*args, "--budget", "10 minutes"]) != 0
    assert "--budget takes a time: 90s, 10m, 1h or plain seconds" in capsys.readouterr().err
    assert main([*args, "--budget", "10m"]) == 0
    out = capsys.readouterr().out
    assert "of the budget went to loading; the runs get the" in out
    assert "the runs, most informative first:" in out
    assert "estimate: feature-extraction/k=all/seed=0 extraction ~" in out
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["budget"]["budget_seconds"] < 600
