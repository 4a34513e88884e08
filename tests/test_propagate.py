"""Label spreading and the semi-supervised strategy that uses it."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_images import colour_data, tiny_weights_file
from PIL import Image

from headstart.cli import main
from headstart.data.arrays import from_arrays
from headstart.data.dataset import UNLABELLED
from headstart.data.loaders import load_unlabelled
from headstart.errors import ConfigError, DataError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.evaluation.comparison import CompareSettings, compare
from headstart.train.config import TrainConfig
from headstart.train.probe import fit_linear_probe
from headstart.train.spreading import label_spreading

TINY = "test_efficientnet"


def _clusters(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes, each a long arc in its own plane of a 64-d space: neighbours along
    an arc share a class, but points far along one arc point away from its labelled ones."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(64, 64)))[0]
    points, labels = [], []
    for label in range(3):
        a, b = directions[:, 2 * label], directions[:, 2 * label + 1]
        angle = rng.uniform(0, 1.5 * np.pi, per_class)
        arc = np.cos(angle)[:, None] * a + np.sin(angle)[:, None] * b
        points.append(arc + rng.normal(0, 0.02, (per_class, 64)))
        labels.append(np.full(per_class, label))
    return np.concatenate(points).astype(np.float32), np.concatenate(labels)


def test_labels_spread_along_the_clusters():
    x, y = _clusters(300)
    rng = np.random.default_rng(1)
    picks = [rng.choice(np.flatnonzero(y == c), 2, replace=False) for c in range(3)]
    labelled = np.concatenate(picks)
    rest = np.setdiff1d(np.arange(len(y)), labelled)
    spread = label_spreading(x[labelled], y[labelled], x[rest], 3)
    accuracy = (spread.labels == y[rest]).mean()
    assert accuracy > 0.95, accuracy
    assert spread.confidence.shape == (len(rest),)
    assert ((spread.confidence >= 0) & (spread.confidence <= 1)).all()
    # The control: a linear probe on the six labelled points alone does much worse,
    # so the spreading, not the features, is what this test measures.
    probe = fit_linear_probe(x[labelled], y[labelled], 3)
    assert probe.score(x[rest], y[rest]) < accuracy - 0.1


def test_label_spreading_rejects_bad_arguments():
    x, y = _clusters(10)
    with pytest.raises(ConfigError, match="unlabelled"):
        label_spreading(x[:5], y[:5], x[:0], 3)
    with pytest.raises(ConfigError, match="unlabelled"):
        label_spreading(x[:5], y[:5], x[5:, :3], 3)
    with pytest.raises(ConfigError, match="labels"):
        label_spreading(x[:5], y[:4], x[5:], 3)
    with pytest.raises(ConfigError, match="neighbours"):
        label_spreading(x[:5], y[:5], x[5:], 3, neighbours=len(x))
    with pytest.raises(ConfigError, match="alpha"):
        label_spreading(x[:5], y[:5], x[5:], 3, alpha=1.0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights_file(tmp_path_factory.mktemp("w"), seed=5, model=TINY)


def _config() -> TrainConfig:
    return TrainConfig(image_size=32, validation_fraction=0.0)


def _hide_labels(dataset, seed: int):
    """The same images with shuffled labels: what the strategy must never read."""
    images = np.stack([np.asarray(dataset.image(i)) for i in range(len(dataset))])
    labels = np.random.default_rng(seed).permutation(dataset.labels)
    return from_arrays(images, labels, classes=dataset.classes)


def test_semi_supervised_never_reads_the_unlabelled_labels(weights):
    train, unlabelled = colour_data(2, seed=0), colour_data(20, seed=3)
    probas = []
    for seed in (0, 1):
        clf = ImageClassifier(TINY, "semi-supervised", _config(), weights=weights)
        clf.fit(train, unlabelled=_hide_labels(unlabelled, seed))
        probas.append(clf.predict_proba(colour_data(4, seed=9)))
    np.testing.assert_array_equal(probas[0], probas[1])
    assert "label spreading" in clf.plan_.stages
    assert any("60 unlabelled" in note for note in clf.plan_.notes)


def test_semi_supervised_changes_the_head(weights):
    """With unlabelled images the head differs from plain feature extraction's: they are used."""
    train, unlabelled, test = colour_data(2, 0), colour_data(20, 3), colour_data(4, 9)
    plain = ImageClassifier(TINY, "feature-extraction", _config(), weights=weights).fit(train)
    semi = ImageClassifier(TINY, "semi-supervised", _config(), weights=weights)
    semi.fit(train, unlabelled=unlabelled)
    assert not np.allclose(plain.predict_proba(test), semi.predict_proba(test))


def test_unlabelled_images_are_asked_for_and_refused_by_name(weights):
    train = colour_data(2, 0)
    with pytest.raises(ConfigError, match="needs unlabelled images"):
        ImageClassifier(TINY, "semi-supervised", _config(), weights=weights).fit(train)
    with pytest.raises(ConfigError, match="does not use unlabelled images"):
        ImageClassifier(TINY, "feature-extraction", _config(), weights=weights).fit(
            train, unlabelled=colour_data(2, 1)
        )
    with pytest.raises(ConfigError, match="augment"):
        config = _config().replace(augment=True)
        ImageClassifier(TINY, "semi-supervised", config, weights=weights).fit(
            train, unlabelled=colour_data(2, 1)
        )


def test_compare_uses_the_undrawn_images_and_skips_all_labels(tmp_path, weights):
    train, test = colour_data(8, 0), colour_data(3, 1)
    settings = CompareSettings(
        strategies=("feature-extraction", "semi-supervised"),
        labels_per_class=(2, None),
        backbone=TINY,
        weights=weights,
        image_size=32,
    )
    results = compare(train, test, tmp_path, settings)
    runs = {r["id"]: r for r in results["runs"]}
    semi = runs["semi-supervised/k=2/seed=0"]
    assert semi["status"] == "ok" and semi["unlabelled_images"] == len(train) - 6
    assert "semi-supervised/k=all/seed=0" not in runs
    assert any("no unlabelled images" in note for note in results["notes"])


def _folder(root, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
            pixels[..., c] += 150
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_load_unlabelled_walks_the_folder_and_names_bad_files(tmp_path):
    root = _folder(tmp_path / "pool", 3, 0)
    (root / "loose.png").write_bytes((root / "red" / "0.png").read_bytes())
    (root / "red" / "broken.jpg").write_text("not an image")
    pool = load_unlabelled(root)
    assert len(pool) == 10 and pool.classes == [UNLABELLED]
    assert any("broken.jpg" in s.path for s in pool.report.skipped)
    with pytest.raises(DataError, match="folder not found"):
        load_unlabelled(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_unlabelled(tmp_path / "empty")


def test_cli_semi_supervised_round_trip_and_flag_mistakes(tmp_path, capsys):
    data = _folder(tmp_path / "data", 6, 0)
    pool = _folder(tmp_path / "pool", 5, 1)
    tiny = ["--backbone", TINY, "--weights", "none", "--image-size", "32"]
    out = tmp_path / "model"
    common = ["train", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "c"), *tiny]
    assert main([*common, "--strategy", "semi-supervised", "--unlabelled", str(pool)]) == 0
    printed = capsys.readouterr().out
    assert "unlabelled: 15 images" in printed and "label spreading" in printed
    assert (out / "model.safetensors").is_file()
    assert main([*common, "--strategy", "semi-supervised"]) == 2
    assert "needs --unlabelled" in capsys.readouterr().err
    assert main([*common, "--unlabelled", str(pool)]) == 2
    assert "only used by --strategy semi-supervised" in capsys.readouterr().err
    code = main([*common, "--strategy", "semi-supervised", "--unlabelled", str(tmp_path / "x")])
    assert code == 2 and "folder not found" in capsys.readouterr().err


def test_an_island_no_label_reaches_is_marked_and_left_out_of_training():
    """More identical far-away points than neighbours: no edge leads to them."""
    x, y = _clusters(40)
    island = np.full((12, x.shape[1]), -3.0, dtype=np.float32)
    island[:, 0] = 40.0
    seeds = np.array([0, 40, 80])  # one labelled point per arc
    rest = np.setdiff1d(np.arange(len(y)), seeds)
    unlabelled = np.concatenate([x[rest], island])
    spread = label_spreading(x[seeds], y[seeds], unlabelled, 10, neighbours=10)
    assert not spread.reached[-12:].any() and spread.reached[:-12].all()
    assert (spread.confidence[-12:] == 0).all()
    assert ((spread.confidence >= 0) & (spread.confidence <= 1)).all()


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"neighbours": True}, "neighbours"),
        ({"iterations": 0}, "iterations"),
        ({"pca_dims": 0}, "pca_dims"),
        ({"chunk": 0}, "chunk"),
        ({"alpha": "a"}, "alpha"),
        ({"labels": np.array([0, 1, 2, 3, 0])}, "labels"),
        ({"labels": np.array([0, 1, -1, 1, 0])}, "labels"),
        ({"labels": np.array([0.0, 1, 2, 1, 0])}, "labels"),
        ({"labelled": np.zeros((0, 64), np.float32), "labels": np.zeros(0, int)}, "labelled"),
    ],
)
def test_bad_arguments_are_named(change, name):
    x, y = _clusters(10)
    arguments = {"labelled": x[:5], "labels": y[:5], "unlabelled": x[5:], "num_classes": 3}
    arguments.update(change)
    with pytest.raises(ConfigError, match=f"'{name}'"):
        label_spreading(**arguments)
    with pytest.raises(ConfigError, match="'unlabelled'.*finite"):
        bad = x[5:].copy()
        bad[0, 0] = np.nan
        label_spreading(x[:5], y[:5], bad, 3)


def test_labelled_or_test_images_among_the_unlabelled_are_left_out(tmp_path, capsys):
    """--unlabelled pointing at the data itself must not put test images in training."""
    data = _folder(tmp_path / "data", 6, 0)
    tiny = ["--backbone", TINY, "--weights", "none", "--image-size", "32"]
    args = ["train", str(data), "--out", str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c")]
    code = main([*args, *tiny, "--strategy", "semi-supervised", "--unlabelled", str(data)])
    assert code == 2
    assert "every image in it is also in" in capsys.readouterr().err
    pool = _folder(tmp_path / "pool", 2, 5)
    for name in ("red", "green"):  # two of the data's own images join the pool
        (pool / name / "copy.png").write_bytes((data / name / "0.png").read_bytes())
    code = main([*args, *tiny, "--strategy", "semi-supervised", "--unlabelled", str(pool)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "unlabelled: 6 images" in printed
    assert "(2 also in the training or test images, left out)" in printed


def test_the_plan_says_when_labels_are_plentiful(weights):
    clf = ImageClassifier(TINY, "semi-supervised", _config(), weights=weights)
    clf.fit(colour_data(50, 0), unlabelled=colour_data(5, 3))
    assert any("50+ labels per class" in note for note in clf.plan_.notes)
    few = ImageClassifier(TINY, "semi-supervised", _config(), weights=weights)
    few.fit(colour_data(3, 0), unlabelled=colour_data(5, 3))
    assert not any("labels per class" in note for note in few.plan_.notes)
