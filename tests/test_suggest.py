"""headstart.suggest and `headstart suggest`: which pool images to label next."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import headstart as hs
from headstart.active.selection import cold_start_batch, normalised, uncertain_batch
from headstart.cli import main
from headstart.errors import ConfigError, DataError

SIZE = 32  # px fed to the backbone: small, so the tests extract quickly


def _images(rng: np.random.Generator, count: int, shade: int) -> np.ndarray:
    """``count`` 16x16 RGB images around one shade, each with its own noise."""
    base = np.full((count, 16, 16, 3), shade, dtype=np.int16)
    return np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data() -> tuple[hs.ImageDataset, hs.ImageDataset]:
    rng = np.random.default_rng(0)
    shades = (30, 130, 230)
    labelled = np.concatenate([_images(rng, 3, s) for s in shades])
    labels = np.repeat(np.arange(3), 3)
    fresh = np.concatenate([_images(rng, 6, s) for s in shades])
    # the pool also holds a copy of a labelled image and a repeated pool image
    pool = np.concatenate([fresh, labelled[:1], fresh[:1]])
    return (
        hs.from_arrays(labelled, labels, classes=["dark", "mid", "light"]),
        hs.from_arrays(pool, np.zeros(len(pool), dtype=np.int64)),
    )


def test_suggestions_are_distinct_unlabelled_and_seeded(data) -> None:
    labelled, pool = data
    first = hs.suggest(labelled, pool, 8, image_size=SIZE)
    again = hs.suggest(labelled, pool, 8, image_size=SIZE)
    assert first.mode == "uncertainty" and len(first) == 8
    assert first == again  # deterministic under a seed
    paths = [s.path for s in first]
    assert len(set(paths)) == len(paths)
    index = {pool.source(i): i for i in range(len(pool))}
    hashes = [pool.content_hashes()[index[p]] for p in paths]
    assert len(set(hashes)) == len(hashes)  # the repeated pool image counts once
    assert not set(hashes) & set(labelled.content_hashes())  # never an already-labelled image
    assert first.pool_size == len(pool) - 2
    assert all(s.suggested_label in labelled.classes for s in first)
    assert all(0 < s.probability <= 1 for s in first)


def test_asking_for_more_than_the_pool_gives_the_whole_pool_once(data) -> None:
    labelled, pool = data
    found = hs.suggest(labelled, pool, 100, image_size=SIZE)
    assert len(found) == found.pool_size == len({s.path for s in found})


def test_cold_start_needs_no_model(data) -> None:
    _, pool = data
    found = hs.suggest(None, pool, 3, image_size=SIZE)
    assert found.mode == "cold start" and len(found) == 3
    assert all(s.suggested_label is None and s.probability is None for s in found)
    assert all(s.reason.startswith("representative of") for s in found)
    # one label in a class is too few for a probe: also a cold start
    labelled, _ = data
    assert hs.suggest(labelled.subset([0, 3, 4, 6, 7]), pool, 3, image_size=SIZE).mode == (
        "cold start"
    )


def _clusters(rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Six well-apart clusters of pool points: cluster 0 (30 near-copies) is the most
    uncertain, the other five (5 points each) a little less."""
    centres = rng.normal(size=(6, 16)) * 10
    sizes = [30, 5, 5, 5, 5, 5]
    cluster = np.repeat(np.arange(6), sizes)
    x = centres[cluster] + rng.normal(size=(len(cluster), 16)) * 0.05
    margin = np.where(cluster == 0, 0.02, 0.1) + rng.uniform(0, 0.01, len(cluster))
    proba = np.stack([(1 + margin) / 2, (1 - margin) / 2], axis=1)
    return normalised(x), proba, cluster


def test_diverse_batch_covers_more_clusters_than_the_top_uncertainty_batch() -> None:
    pool, proba, cluster = _clusters(np.random.default_rng(1))
    labels = np.array([0, 0, 1, 1])
    labelled = pool[:0]
    top = uncertain_batch(labelled, labels, pool, proba, 6, 0, diverse=False)
    diverse = uncertain_batch(labelled, labels, pool, proba, 6, 0)
    assert len({cluster[p.index] for p in top}) == 1  # six copies of one confusion
    assert len({cluster[p.index] for p in diverse}) == 6
    assert diverse == uncertain_batch(labelled, labels, pool, proba, 6, 0)


def test_cold_start_batch_takes_one_image_per_group_largest_first() -> None:
    pool, _, cluster = _clusters(np.random.default_rng(2))
    picks = cold_start_batch(pool, 6, seed=0)
    assert sorted(cluster[p.index] for p in picks) == list(range(6))
    assert cluster[picks[0].index] == 0 and picks[0].group_size == 30


def _write_pngs(folder, arrays) -> None:
    folder.mkdir(parents=True)
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"{i:02d}.png")


def test_cli_writes_the_csv_and_the_html_page(tmp_path, capsys) -> None:
    rng = np.random.default_rng(3)
    for name, shade in (("dark", 30), ("light", 230)):
        _write_pngs(tmp_path / "data" / name, _images(rng, 3, shade))
    _write_pngs(tmp_path / "pool", np.concatenate([_images(rng, 4, 30), _images(rng, 4, 230)]))
    out = tmp_path / "next.csv"
    code = main(["suggest", str(tmp_path / "data"), "--unlabelled", str(tmp_path / "pool"),
                 "-n", "4", "--image-size", str(SIZE), "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and {r["suggested_label"] for r in rows} <= {"dark", "light"}
    assert all(r["path"].startswith(str(tmp_path / "pool")) and r["why"] for r in rows)
    page = out.with_suffix(".html").read_text()
    assert page.count('src="data:image/png;base64,') == 4
    assert "http://" not in page and "https://" not in page  # nothing fetched


def test_bad_n_and_a_missing_pool_are_clear_errors(tmp_path, capsys, data) -> None:
    labelled, pool = data
    with pytest.raises(ConfigError, match="'n' parameter"):
        hs.suggest(labelled, pool, 0)
    with pytest.raises(DataError, match="does not exist"):
        hs.suggest(labelled, tmp_path / "nowhere", 5)
    assert main(["suggest", str(tmp_path), "--unlabelled", str(tmp_path / "nowhere")]) != 0
    assert "nowhere" in capsys.readouterr().err
    assert main(["suggest", str(tmp_path), "--unlabelled", str(tmp_path), "-n", "-3"]) != 0
    assert "--number must be an int >= 1" in capsys.readouterr().err
