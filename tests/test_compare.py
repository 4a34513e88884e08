"""compare and report: same splits for every strategy, numbers in the report are the
numbers in results.json, plots are real PNGs, finished runs are reused, a failing
strategy is reported while the others complete."""

from __future__ import annotations

import json
import re

import pytest
from fixtures_images import colour_data, tiny_weights_file
from PIL import Image

from headstart.errors import ConfigError, DataError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.evaluation.comparison import CompareCallback, CompareSettings, compare, load_results
from headstart.evaluation.report import build_report
from headstart.strategies import fine_tune

TINY = "test_efficientnet"
QUICK = {"epochs": 1, "batch_size": 8, "patience": 0}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights_file(tmp_path_factory.mktemp("w"), seed=7, model=TINY)


def _settings(weights, **changes) -> CompareSettings:
    base = dict(
        strategies=("scratch", "feature-extraction", "fine-tune"),
        labels_per_class=(4, None),
        seeds=(0,),
        backbone=TINY,
        weights=weights,
        image_size=32,
        overrides={"scratch": QUICK, "fine-tune": QUICK},
    )
    base.update(changes)
    return CompareSettings(**base)


class Recorder(CompareCallback):
    def __init__(self):
        self.ends = []

    def on_run_end(self, record, reused):
        self.ends.append((record["id"], reused, record.get("status")))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, weights):
    """One comparison, shared by the read-only tests below."""
    folder = tmp_path_factory.mktemp("cmp")
    train, test = colour_data(8, 0), colour_data(3, 1)
    results = compare(train, test, folder, _settings(weights), data_description="colours")
    build_report(folder, title="colours")
    return folder, results, train


def test_every_strategy_runs_on_identical_draws(finished):
    folder, results, train = finished
    runs = {r["id"]: r for r in results["runs"]}
    assert set(runs) == {
        f"{s}/k={k}/seed=0"
        for s in ("scratch", "feature-extraction", "fine-tune")
        for k in ("4", "all")
    }
    assert all(r["status"] == "ok" for r in runs.values())
    for k, n in (("4", 12), ("all", len(train))):
        assert {runs[f"{s}/k={k}/seed=0"]["train_images"] for s in ("scratch", "fine-tune")} == {n}
    assert (
        runs["scratch/k=4/seed=0"]["trainable_parameters"]
        > (runs["feature-extraction/k=4/seed=0"]["trainable_parameters"])
    )
    assert json.loads((folder / "results.json").read_text()) == load_results(folder)


def test_report_numbers_match_the_results_file(finished):
    folder, results, _ = finished
    markdown = (folder / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if re.match(r"\| (4|all) \|", line)]
    assert len(rows) == 6
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        k, strategy, balanced, accuracy = cells[0], cells[1], cells[2], cells[3]
        run = next(
            r
            for r in results["runs"]
            if str(r["labels_per_class"]) == k and r["strategy"] == strategy
        )
        assert balanced == f"{100 * run['balanced_accuracy']:.1f} %"  # it leads the row
        assert accuracy == f"{100 * run['accuracy']:.1f} %"
        assert cells[4] == f"{run['train_seconds']:.1f}"
    html = (folder / "report.html").read_text()
    assert "data:image/png;base64," in html  # self-contained
    assert "What the numbers say" in markdown and "scratch" in markdown


def test_plots_are_valid_pngs(finished):
    folder, _, _ = finished
    for name in ("accuracy_vs_labels.png", "accuracy_vs_time.png", "confusion_best.png"):
        data = (folder / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(folder / name) as image:
            image.verify()
        with Image.open(folder / name) as image:
            assert image.size[0] > 200 and image.size[1] > 200


def test_rerun_reuses_finished_runs_without_training(tmp_path, weights, monkeypatch):
    train, test = colour_data(8, 0), colour_data(3, 1)
    compare(train, test, tmp_path, _settings(weights, strategies=("feature-extraction",)))

    def no_training(self, *args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ImageClassifier, "fit", no_training)
    recorder = Recorder()
    again = compare(
        train, test, tmp_path, _settings(weights, strategies=("feature-extraction",)),
        callback=recorder,
    )  # fmt: skip
    assert [reused for _, reused, _ in recorder.ends] == [True, True]
    assert len(again["runs"]) == 2


def test_changed_settings_are_not_reused(tmp_path, weights):
    train, test = colour_data(8, 0), colour_data(3, 1)
    compare(train, test, tmp_path, _settings(weights, strategies=("feature-extraction",)))
    recorder = Recorder()
    changed = _settings(weights, strategies=("feature-extraction",), image_size=40)
    compare(train, test, tmp_path, changed, callback=recorder)
    assert [reused for _, reused, _ in recorder.ends] == [False, False]


def test_a_failing_strategy_is_reported_and_the_others_complete(tmp_path, weights, monkeypatch):
    def out_of_memory(self, ctx):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(fine_tune.FineTune, "fit", out_of_memory)
    train, test = colour_data(8, 0), colour_data(3, 1)
    results = compare(train, test, tmp_path, _settings(weights, labels_per_class=(4,)))
    status = {r["strategy"]: r["status"] for r in results["runs"]}
    assert status == {"scratch": "ok", "feature-extraction": "ok", "fine-tune": "failed"}
    failed = next(r for r in results["runs"] if r["status"] == "failed")
    assert "out of memory" in failed["error"]
    build_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "fine-tune/k=4/seed=0 failed" in markdown
    assert "| 4 | fine-tune | failed |" in markdown


def test_sizes_larger_than_the_smallest_class_are_dropped_with_a_note(tmp_path, weights):
    train, test = colour_data(5, 0), colour_data(2, 1)
    settings = _settings(weights, strategies=("feature-extraction",), labels_per_class=(3, 50))
    results = compare(train, test, tmp_path, settings)
    assert [r["labels_per_class"] for r in results["runs"]] == [3]
    assert any("50" in note for note in results["notes"])


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="'strategy'"):
        CompareSettings(strategies=("fine-tuning",))
    with pytest.raises(ConfigError, match="'labels_per_class'"):
        CompareSettings(labels_per_class=(0,))
    with pytest.raises(ConfigError, match="'overrides'"):
        CompareSettings(overrides={"finetune": {}})


def test_a_narrower_rerun_keeps_the_other_runs_for_later(tmp_path, weights, monkeypatch):
    """Asking for fewer sizes reports those, but loses no finished run: asking for the
    rest again reuses them."""
    train, test = colour_data(8, 0), colour_data(3, 1)
    both = _settings(weights, strategies=("feature-extraction",), labels_per_class=(2, 4))
    compare(train, test, tmp_path, both)
    narrow = _settings(weights, strategies=("feature-extraction",), labels_per_class=(2,))
    results = compare(train, test, tmp_path, narrow)
    assert [r["id"] for r in results["runs"]] == ["feature-extraction/k=2/seed=0"]
    saved = load_results(tmp_path)
    assert [r["id"] for r in saved["runs"]] == ["feature-extraction/k=2/seed=0"]
    assert [r["id"] for r in saved["earlier_runs"]] == ["feature-extraction/k=4/seed=0"]

    def no_training(self, *args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ImageClassifier, "fit", no_training)
    recorder = Recorder()
    compare(train, test, tmp_path, both, callback=recorder)
    assert [reused for _, reused, _ in recorder.ends] == [True, True]
    assert "earlier_runs" not in load_results(tmp_path)


def test_the_report_says_what_each_run_held_out(finished):
    """8 images per class are too few to spare a hold-out: the report must not claim one
    (it said 'fine-tune and scratch hold 10 % of them out' whatever happened)."""
    folder, results, _ = finished
    assert all(r["held_out_images"] == 0 for r in results["runs"])
    report = (folder / "report.md").read_text()
    assert "10 %" not in report
    assert "Hold-out: scratch held none out; feature-extraction held none out; " in report


def test_the_report_gives_the_share_held_out(tmp_path, weights):
    train, test = colour_data(25, 0), colour_data(3, 1)
    settings = _settings(
        weights,
        strategies=("fine-tune",),
        labels_per_class=(None,),
        overrides={"fine-tune": {**QUICK, "validation_fraction": 0.2}},
    )
    results = compare(train, test, tmp_path, settings)
    (run,) = results["runs"]
    assert run["held_out_images"] == 15  # 20 % of 75 drawn images
    build_report(tmp_path)
    assert (
        "fine-tune held 20% of them out for early stopping." in (tmp_path / "report.md").read_text()
    )


def test_a_comparison_where_no_run_can_run_is_an_error(tmp_path, weights):
    """semi-supervised at 'all' has no unlabelled images left: nothing runs, and that is
    not a success (it exited 0 with an empty report)."""
    settings = _settings(weights, strategies=("semi-supervised",), labels_per_class=(None,))
    with pytest.raises(DataError, match="No run of this comparison could run: semi-supervised"):
        compare(colour_data(8, 0), colour_data(3, 1), tmp_path, settings)
