"""Active against random labelling: the simulation (``active_curve``), its place in
``compare`` and the report, and ``compare --active``'s flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_images import colour_data, noise_folder, tiny_weights_file

from headstart.active.simulation import active_curve, first_reaching
from headstart.cli import compare as compare_command
from headstart.cli import main
from headstart.errors import ConfigError, DataError
from headstart.evaluation.active_section import active_verdict
from headstart.evaluation.comparison import CompareSettings, compare
from headstart.evaluation.report import build_report

TINY = "test_efficientnet"


def _features(rng: np.random.Generator, n: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, one per class, overlapping enough that labels still help."""
    labels = np.arange(n) % classes
    x = rng.normal(size=(n, 16)).astype(np.float32)
    x[np.arange(n), labels] += 1.2
    return x, labels


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    return (*_features(rng, 90), *_features(rng, 60))


def test_picks_are_distinct_pool_rows_never_already_labelled(blobs):
    curve = active_curve(*blobs, seed_per_class=2, rounds=4, batch=6, seed=0)
    seeds = set(curve.seed_rows)
    assert len(seeds) == 6 and np.bincount(blobs[1][list(seeds)]).tolist() == [2, 2, 2]
    for picks in (curve.active_picks, curve.random_picks):
        assert len(picks) == 4 and all(len(batch) == 6 for batch in picks)
        flat = [row for batch in picks for row in batch]
        assert len(set(flat)) == len(flat)  # no image twice
        assert not set(flat) & seeds  # never an image of the seed set
        assert all(0 <= row < len(blobs[1]) for row in flat)
    assert curve.active_picks != curve.random_picks
    assert [p.labelled for p in curve.active_points] == [6, 12, 18, 24, 30]
    assert [p.labels_per_class for p in curve.random_points] == [2, 4, 6, 8, 10]


def test_deterministic_under_a_seed_and_different_across_seeds(blobs):
    first = active_curve(*blobs, rounds=2, batch=6, seed=3)
    assert active_curve(*blobs, rounds=2, batch=6, seed=3) == first
    other = active_curve(*blobs, rounds=2, batch=6, seed=4)
    assert other.seed_rows != first.seed_rows


def test_both_arms_are_scored_on_the_same_test_images(blobs):
    """With the whole pool labelled, both arms hold the same images, so the same probe:
    their accuracies agree only if both are scored on the same test images."""
    x, y, tx, ty = blobs
    small_x, small_y = x[:30], y[:30]
    curve = active_curve(small_x, small_y, tx, ty, seed_per_class=2, rounds=10, batch=8, seed=0)
    assert curve.test_images == len(ty)
    assert curve.active_points[0] == curve.random_points[0]  # the same seed set
    # 24 pool images in rounds of 8: three rounds exhaust it, and the curve stops there
    assert len(curve.active_points) == len(curve.random_points) == 4
    assert curve.active_points[-1].labelled == curve.random_points[-1].labelled == 30
    assert curve.active_points[-1].accuracy == pytest.approx(curve.random_points[-1].accuracy)
    expected = active_curve(small_x, small_y, tx[:20], ty[:20], rounds=1, batch=8, seed=0)
    assert expected.test_images == 20


def test_a_pool_label_is_read_only_once_it_is_picked(blobs):
    """Labels of pool images neither arm picked can be anything: nothing changes (the seed
    set given, since drawing one per class reads every label)."""
    x, y, tx, ty = blobs
    rows = [0, 1, 2, 3, 4, 5]
    curve = active_curve(x, y, tx, ty, rounds=3, batch=6, seed=1, seed_rows=rows)
    assert curve.seed_rows == tuple(rows)
    seen = set(curve.seed_rows) | {r for b in curve.active_picks + curve.random_picks for r in b}
    hidden = np.setdiff1d(np.arange(len(y)), sorted(seen))
    assert len(hidden) > 30
    scrambled = y.copy()
    scrambled[hidden] = (scrambled[hidden] + 1) % 3
    assert active_curve(x, scrambled, tx, ty, rounds=3, batch=6, seed=1, seed_rows=rows) == curve
    scrambled[curve.active_picks[0][0]] += 1  # a picked label does count
    assert active_curve(x, scrambled, tx, ty, rounds=3, batch=6, seed=1, seed_rows=rows) != curve


def test_labels_to_match_is_the_first_active_round_at_random_final(blobs):
    curve = active_curve(*blobs, rounds=4, batch=6, seed=0)
    target = curve.random_points[-1].accuracy
    reached = [p.labels_per_class for p in curve.active_points if p.accuracy >= target]
    assert curve.labels_to_match() == (reached[0] if reached else None)
    record = curve.to_dict()
    assert record["active_labels_per_class_to_match"] == curve.labels_to_match()
    assert first_reaching(record["active"], 1.01) is None
    assert first_reaching(record["active"], 0.0) == 2


@pytest.mark.parametrize("name", ["seed_per_class", "rounds", "batch"])
def test_bad_values_are_refused_naming_the_parameter(blobs, name):
    with pytest.raises(ConfigError, match=f"The '{name}' parameter of active_curve"):
        active_curve(*blobs, **{name: 0})


def test_too_few_images_per_class_is_a_clear_error(blobs):
    x, y, tx, ty = blobs
    with pytest.raises(DataError, match="class 0 has 4") as caught:
        active_curve(x[:12], y[:12], tx, ty, seed_per_class=4, batch=1)
    assert "{seed_per_class}" in caught.value.hint
    with pytest.raises(DataError, match="pool of at least one round of 50"):
        active_curve(x[:30], y[:30], tx, ty, seed_per_class=2, batch=50)
    with pytest.raises(ConfigError, match="'test_labels' parameter of active_curve"):
        active_curve(x, y, tx[:0], ty[:0])
    with pytest.raises(ConfigError, match="'seed_rows'.*distinct training rows in"):
        active_curve(x, y, tx, ty, seed_rows=[0, 0, 1])


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A comparison with --active on the colour images (tiny backbone, two seeds)."""
    root = tmp_path_factory.mktemp("active")
    weights = tiny_weights_file(root, seed=7, model=TINY)
    train, test = colour_data(8, 0), colour_data(3, 1)
    settings = CompareSettings(
        strategies=("feature-extraction",), labels_per_class=(4,), seeds=(0, 1),
        backbone=TINY, weights=weights, image_size=32, active=True, active_rounds=3,
        active_batch=3, active_seed_per_class=2,
    )  # fmt: skip
    folder = root / "cmp"
    results = compare(train, test, folder, settings, cache_dir=root / "cache")
    paths = build_report(folder, title="colours")
    return folder, results, paths, test


def test_compare_records_both_arms_per_seed_on_its_test_images(compared):
    folder, results, _, test = compared
    record = results["active"]
    assert json.loads((folder / "results.json").read_text())["active"] == record
    assert record["test_images"] == len(test) == results["data"]["test_images"]
    assert record["test_fingerprint"] == test.fingerprint()
    assert results["data"]["fingerprint"].endswith(record["test_fingerprint"])
    assert [c["seed"] for c in record["curves"]] == [0, 1]
    assert record["pool_images"] == 24 - 6
    for curve in record["curves"]:
        assert curve["test_images"] == len(test)
        assert [p["labelled"] for p in curve["active"]] == [6, 9, 12, 15]
        assert [p["labelled"] for p in curve["random"]] == [6, 9, 12, 15]
    mean = np.mean([c["random"][-1]["accuracy"] for c in record["curves"]])
    assert record["random_final"] == pytest.approx(mean)


def test_the_report_shows_the_curve_the_table_and_the_verdict(compared):
    folder, results, paths, _ = compared
    record = results["active"]
    markdown = paths["markdown"].read_text()
    assert "## Active against random labelling" in markdown
    assert "![Active against random labelling](active_vs_random.svg)" in markdown
    for act, rnd in zip(record["mean"]["active"], record["mean"]["random"], strict=True):
        row = f"| {act['labels_per_class']:g} | {100 * act['accuracy']:.1f} % | "
        assert row + f"{100 * rnd['accuracy']:.1f} % |" in markdown
    assert active_verdict(record) in markdown
    page = paths["html"].read_text()
    assert page.count("<svg") == 1 and 'data-name="active (suggest)"' in page
    assert 'data-name="random"' in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )  # self-contained: nothing fetched
    svg = (folder / "active_vs_random.svg").read_text()
    points = svg.split('data-name="random" points="')[1].split('"')[0].split()
    assert len(points) == len(record["mean"]["random"])


def _record(active, random, seeds=(0,)):
    """A results.json "active" record with these mean accuracies, 2 labels per class apart."""

    def points(accuracies):
        return [{"labels_per_class": 2 + 2 * i, "accuracy": a} for i, a in enumerate(accuracies)]

    return {
        "mean": {"active": points(active), "random": points(random)},
        "seeds": list(seeds),
        "rounds": len(active) - 1,
        "active_labels_per_class_to_match": first_reaching(points(active), random[-1]),
    }


def test_the_verdict_says_where_active_met_random_or_that_it_did_not():
    met = active_verdict(_record([0.5, 0.7, 0.8, 0.8], [0.5, 0.6, 0.7, 0.75], seeds=(0, 1)))
    assert met == (
        "Active labelling reached random labelling's final accuracy (75.0% at 8 labels per "
        "class) at 6 labels per class (mean over seeds 0, 1): 25% fewer labels."
    )
    missed = active_verdict(_record([0.5, 0.55, 0.6], [0.5, 0.6, 0.7]))
    assert missed.startswith("Active labelling did not reach random labelling's final accuracy")
    assert "within 2 rounds (seed 0); it ended at 60.0%." in missed
    flat = active_verdict(_record([1.0, 1.0], [1.0, 1.0]))
    assert flat.startswith("The seed set alone reached") and "fewer labels" not in flat


def _stub(monkeypatch):
    ran = {}

    def run_comparison(train, test, out, settings, args, description, budget=None):
        ran.update(train=train, settings=settings)
        return 0

    monkeypatch.setattr(compare_command, "run_comparison", run_comparison)
    return ran


def test_active_flags_reach_the_settings_with_the_library_defaults(tmp_path, monkeypatch):
    ran = _stub(monkeypatch)
    folder = noise_folder(tmp_path / "data", per_class=10)
    assert main(["compare", str(folder), "--active"]) == 0
    defaults = CompareSettings()
    settings = ran["settings"]
    assert settings.active is True
    assert (settings.active_rounds, settings.active_batch, settings.active_seed_per_class) == (
        defaults.active_rounds, defaults.active_batch, defaults.active_seed_per_class,
    )  # fmt: skip
    args = ["--active", "--active-rounds", "3", "--active-batch", "4"]
    assert main(["compare", str(folder), *args, "--active-seed-per-class", "1"]) == 0
    settings = ran["settings"]
    assert (settings.active_rounds, settings.active_batch, settings.active_seed_per_class) == (
        3, 4, 1,
    )  # fmt: skip
    assert main(["compare", str(folder)]) == 0
    assert ran["settings"].active is False


@pytest.mark.parametrize("flag", ["--active-rounds", "--active-batch", "--active-seed-per-class"])
def test_a_bad_active_value_is_refused_naming_the_flag(tmp_path, capsys, monkeypatch, flag):
    _stub(monkeypatch)
    folder = noise_folder(tmp_path / "data", per_class=10)
    assert main(["compare", str(folder), "--active", flag, "0"]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be an int >= 1. Got 0 instead." in err, err
    assert main(["compare", str(folder), flag, "3"]) == 2  # without --active: changes nothing
    assert f"{flag} applies to the active-vs-random curve only" in capsys.readouterr().err


def test_active_without_enough_images_per_class_is_a_clear_error(tmp_path, capsys):
    folder = noise_folder(tmp_path / "data", per_class=5)
    out = tmp_path / "out"
    base = ["compare", str(folder), "--active", "--out", str(out), "--weights", "none"]
    assert main([*base, "--active-seed-per-class", "4"]) == 2
    err = capsys.readouterr().err
    assert "needs more than 4 training images in every class" in err, err
    assert "Lower --active-seed-per-class below" in err
    assert main(base) == 2  # default rounds of 20 labels: the pool is smaller
    assert "Lower --active-batch to" in capsys.readouterr().err
    assert not (out / "results.json").exists()  # refused before any run
