"""headstart clean: confident learning on held-out probabilities, the gallery, --apply."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.cli import main
from headstart.data.arrays import from_arrays
from headstart.data.loaders import load_csv, load_folder
from headstart.errors import ConfigError
from headstart.evaluation.label_issues import (
    OUTLIER,
    confident_learning,
    find_label_issues,
    issues_from_features,
)
from headstart.features.cache import FeatureCache

NAMES = ("red", "green", "blue")
# (true class, item) saved under another class's folder: the planted label errors.
PLANTED = {("red", 3): "green", ("blue", 5): "red"}


def colour_images(root: Path, per_class: int = 12) -> Path:
    """red/, green/, blue/ of 24x24 PNGs bright in their class's channel; the PLANTED
    items lie in the wrong folder."""
    rng = np.random.default_rng(0)
    for channel, name in enumerate(NAMES):
        for item in range(per_class):
            pixels = rng.integers(0, 60, size=(24, 24, 3), dtype=np.uint8)
            pixels[:, :, channel] += 150
            folder = root / PLANTED.get((name, item), name)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{name}{item}.png")
    return root


def planted_paths(root: Path) -> dict[str, str]:
    """path of each planted image -> its true class."""
    return {
        str(root / wrong / f"{name}{item}.png"): name for (name, item), wrong in PLANTED.items()
    }


def tiny(weights: str) -> list[str]:
    return ["--backbone", "test_efficientnet", "--weights", weights, "--image-size", "32"]


def listing(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(folder)) + "/": "dir" for p in folder.rglob("*") if p.is_dir()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A seeded random tiny backbone: features (and so the flags) are the same every run."""
    from fixtures_images import tiny_weights_file

    return tiny_weights_file(tmp_path_factory.mktemp("weights"), seed=7)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_images(tmp_path_factory.mktemp("clean") / "data")


@pytest.fixture(scope="module")
def cleaned(
    data: Path, weights: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, str]:
    """`headstart clean` run once on ``data``: (out folder, listing before, stdout)."""
    before = listing(data)
    out = tmp_path_factory.mktemp("clean-out") / "out"
    cache = tmp_path_factory.mktemp("clean-cache")
    buffer = io.StringIO()
    from contextlib import redirect_stdout

    with redirect_stdout(buffer):
        code = main(
            ["clean", str(data), "--out", str(out), "--cache-dir", str(cache), *tiny(weights)]
        )
    assert code == 0
    return out, before, buffer.getvalue()


def test_clean_finds_the_planted_flips_and_suggests_their_true_class(
    data: Path, weights: str
) -> None:
    found = find_label_issues(
        load_folder(data), backbone="test_efficientnet", weights=weights, image_size=32,
        cache=False, device="cpu",
    )  # fmt: skip
    suggested = {issue.path: issue.suggested for issue in found.label_issues}
    assert suggested == planted_paths(data)
    # ranked worst first by the probability of the given label
    scores = [issue.self_confidence for issue in found.issues]
    assert scores == sorted(scores)


def test_cli_writes_the_ranked_csv_and_nothing_into_data(
    data: Path, cleaned: tuple[Path, dict, str]
) -> None:
    out, before, stdout = cleaned
    assert listing(data) == before  # same files, same bytes, no new folder
    with (out / "label_issues.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    truth = planted_paths(data)
    assert {row["path"]: row["suggested_label"] for row in rows} == truth
    for row in rows:
        assert row["given_label"] != row["suggested_label"]
        assert row["reason"] in ("likely mislabelled", f"ambiguous between {row['given_label']} "
                                 f"and {row['suggested_label']}")  # fmt: skip
        assert 0.5 < float(row["confidence"]) <= 1
    assert "2 label issue(s) in 36 images" in stdout


def test_never_suggests_a_class_the_data_lacks() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 20)
    features = rng.normal(size=(60, 8)) + 6 * np.eye(8)[labels]
    features[0] = 9 * np.eye(8)[2]  # labelled red, clearly blue
    features[25] = 9 * np.eye(8)[0]  # labelled green, clearly red
    images = np.zeros((60, 4, 4, 3), dtype=np.uint8)
    dataset = from_arrays(images, [NAMES[k] for k in labels]).with_classes(
        ["blue", "green", "red", "zebra"]
    )
    found = issues_from_features(dataset, features)
    zebra = dataset.classes.index("zebra")
    assert not found.probabilities[:, zebra].any()
    assert {issue.suggested for issue in found.issues} <= {"red", "green", "blue"}
    assert {issue.index for issue in found.label_issues} == {0, 25}


def test_an_image_like_no_other_is_an_outlier() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 30)
    features = rng.normal(size=(60, 16)) * 0.3 + 4 * np.eye(16)[labels]
    features[7] = -10 * np.ones(16)  # far from both classes
    dataset = from_arrays(np.zeros((60, 4, 4, 3), dtype=np.uint8), [NAMES[k] for k in labels])
    found = issues_from_features(dataset, features)
    outliers = [issue.index for issue in found.issues if issue.kind == OUTLIER]
    assert outliers == [7]
    assert found.issues[[i.index for i in found.issues].index(7)].reason == (
        "outlier far from every class"
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confident_learning_flags_what_cleanlab_flags(seed: int) -> None:
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, size=300)
    noisy = truth.copy()
    flip = rng.random(300) < 0.15
    noisy[flip] = (truth[flip] + rng.integers(1, 4, size=flip.sum())) % 4
    logits = rng.normal(size=(300, 4)) + 2.5 * np.eye(4)[truth]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ours, _, _ = confident_learning(noisy, probabilities)
    theirs = cleanlab_filter.find_label_issues(noisy, probabilities, n_jobs=1)
    assert ours.sum() > 0
    np.testing.assert_array_equal(ours, theirs)


def test_near_duplicates_come_from_feature_similarity(tmp_path: Path, weights: str) -> None:
    root = colour_images(tmp_path / "data", per_class=6)
    original = root / "green" / "green2.png"
    pixels = np.asarray(Image.open(original)).astype(np.int16)
    Image.fromarray(np.clip(pixels + 3, 0, 255).astype(np.uint8)).save(root / "blue" / "b.png")
    (root / "red" / "copy.png").write_bytes(original.read_bytes())
    found = find_label_issues(
        load_folder(root), backbone="test_efficientnet", weights=weights, image_size=32,
        cache=False, device="cpu", duplicate_similarity=0.99,
    )  # fmt: skip
    pairs = {frozenset((d.first_path, d.second_path)): d for d in found.near_duplicates}
    exact = pairs[frozenset((str(original), str(root / "red" / "copy.png")))]
    near = pairs[frozenset((str(original), str(root / "blue" / "b.png")))]
    assert exact.exact and exact.similarity == pytest.approx(1.0, abs=1e-5)
    assert not near.exact and near.similarity >= 0.99
    assert {near.first_label, near.second_label} == {"green", "blue"}


def test_the_gallery_is_self_contained_and_shows_the_right_images(
    cleaned: tuple[Path, dict, str],
) -> None:
    out, _, _ = cleaned
    page = (out / "label_issues.html").read_text()
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(script|link|iframe)\b", page)
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    shown = re.findall(
        r'<img alt="[^"]*" data-path="([^"]*)" src="data:image/png;base64,([^"]+)"', page
    )
    assert len(shown) == len(sources)
    with (out / "label_issues.csv").open(newline="") as handle:
        flagged = {row["path"] for row in csv.DictReader(handle)}
    assert flagged <= {path for path, _ in shown}
    for path, encoded in shown:
        embedded = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))
        expected = Image.open(path).convert("RGB")
        expected.thumbnail((96, 96), Image.Resampling.LANCZOS)
        np.testing.assert_array_equal(embedded, np.asarray(expected))
    assert "labelled green &rarr; looks like red" in page


def test_apply_writes_a_corrected_csv_and_leaves_data_alone(
    data: Path, cleaned: tuple[Path, dict, str], tmp_path: Path
) -> None:
    out, before, _ = cleaned
    keep_out = str(data / "red" / "red0.png")
    relabel = tmp_path / "relabel.csv"
    with (out / "label_issues.csv").open(newline="") as handle:
        rows = [{"path": r["path"], "label": r["suggested_label"]} for r in csv.DictReader(handle)]
    rows.append({"path": keep_out, "label": "(drop)"})
    with relabel.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    fixed = tmp_path / "fixed"
    assert main(["clean", str(data), "--apply", str(relabel), "--out", str(fixed)]) == 0
    assert listing(data) == before
    corrected = load_csv(fixed / "corrected.csv")
    labels = {
        corrected.source(i): corrected.classes[corrected.labels[i]] for i in range(len(corrected))
    }
    assert len(labels) == 35 and keep_out not in labels
    for path, truth in planted_paths(data).items():
        assert labels[path] == truth
    assert labels[str(data / "red" / "red1.png")] == "red"
    # label_issues.csv itself applies too: its suggested_label column
    again = tmp_path / "again"
    assert (
        main(["clean", str(data), "--apply", str(out / "label_issues.csv"), "--out", str(again)])
        == 0
    )
    assert (again / "corrected.csv").is_file()


def test_apply_names_the_line_of_an_unknown_class(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relabel = tmp_path / "relabel.csv"
    relabel.write_text(f"path,label\n{data / 'red' / 'red0.png'},purple\n")
    assert main(["clean", str(data), "--apply", str(relabel), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "line 2" in error and "'purple'" in error and "blue, green, red" in error


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--folds", "1"], "--folds must be an int in [2, 20]. Got 1 instead."),
        (
            ["--rank-by", "loss"],
            "--rank-by must be one of ('self_confidence', 'normalized_margin')",
        ),
        (["--duplicate-similarity", "2"], "--duplicate-similarity must be a number in [0.5, 1]"),
    ],
)
def test_a_bad_flag_value_is_named(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    assert main(["clean", str(data), "--out", str(tmp_path / "o"), *flags]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_out_inside_data_is_refused(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = listing(data)
    assert main(["clean", str(data), "--out", str(data / "issues")]) == 2
    assert "--out" in capsys.readouterr().err
    assert listing(data) == before


def test_python_settings_are_checked_by_name() -> None:
    dataset = from_arrays(np.zeros((4, 4, 4, 3), dtype=np.uint8), ["a", "a", "b", "b"])
    with pytest.raises(ConfigError, match="'folds' parameter of find_label_issues"):
        find_label_issues(dataset, folds=0)
    with pytest.raises(ConfigError, match="'thresholds' parameter"):
        find_label_issues(dataset, thresholds=3)


def test_compare_reports_the_training_draws_label_issues_and_links_the_gallery(
    data: Path, weights: str, tmp_path: Path
) -> None:
    from fixtures_images import tiny_weights_file

    from headstart.evaluation.comparison import CompareSettings, compare
    from headstart.evaluation.report import build_report

    weights = tiny_weights_file(tmp_path, seed=7)  # the fit's and clean's: one cache entry
    train = load_folder(data)
    test = from_arrays(
        np.stack([np.asarray(train.image(i)) for i in (0, 14, 30)]), ["blue", "green", "red"]
    )
    settings = CompareSettings(
        strategies=("feature-extraction",), labels_per_class=(None,), backbone="test_efficientnet",
        weights=weights, image_size=32,
    )  # fmt: skip
    folder = tmp_path / "cmp"
    results = compare(train, test, folder, settings, cache_dir=tmp_path / "cache")
    record = results["label_issues"]
    assert record["count"] == 2 and record["images"] == 36
    # the fit cached the 36 training and 3 test images; clean extracted nothing again
    assert sum(e.images for e in FeatureCache(tmp_path / "cache").entries()) == 39
    with (folder / "label_issues.csv").open(newline="") as handle:
        assert {row["path"] for row in csv.DictReader(handle)} == set(planted_paths(data))
    paths = build_report(folder)
    assert "2 label issue(s) in the 36 training images" in paths["markdown"].read_text()
    assert '<a href="label_issues.html">label_issues.html</a>' in paths["html"].read_text()
    assert (folder / "label_issues.html").is_file()
