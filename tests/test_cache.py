"""The per-image feature cache: a forward pass only for images no shard holds, and the
rows it serves are the very bits a fresh extraction gives, in the dataset's order."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from headstart.backbones.registry import create_backbone
from headstart.data.arrays import from_arrays
from headstart.data.loaders import load_folder
from headstart.data.split import split_dataset
from headstart.features import shards
from headstart.features.cache import CacheUse, FeatureCache, cached_features
from headstart.features.extract import extract_features
from headstart.features.fastpath import FOLD_CHECK_IMAGES

TINY = "test_efficientnet"


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return create_backbone(TINY, weights="none", image_size=64)


def _pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 20, 20, 3), dtype=np.uint8)


@pytest.fixture
def images():
    return from_arrays(_pixels(30, 0), [0, 1, 2] * 10)


@pytest.fixture
def forwards(monkeypatch) -> list[int]:
    """Images through the backbone by either entry point (final only, or with stages),
    less the fast path's check of its folded copy (FOLD_CHECK_IMAGES random images)."""
    calls: list[int] = []
    cls = type(timm.create_model(TINY))
    for name in ("forward_features", "forward_intermediates"):
        original = getattr(cls, name)

        def counting(self, x, *args, _original=original, **kwargs):
            if len(x) != FOLD_CHECK_IMAGES:
                calls.append(len(x))
            return _original(self, x, *args, **kwargs)

        monkeypatch.setattr(cls, name, counting)
    return calls


def _same(found: dict, fresh: dict) -> None:
    assert found.keys() == fresh.keys()
    for layer in fresh:
        np.testing.assert_array_equal(found[layer], fresh[layer])  # bit for bit


def test_a_second_seed_or_a_subset_extracts_nothing(tmp_path, backbone, images, forwards):
    cache = FeatureCache(tmp_path / "cache")
    train, test = split_dataset(images, test_size=0.2, seed=0)
    assert cached_features(backbone, train, cache)[1] == CacheUse(0, 24)
    assert cached_features(backbone, test, cache)[1] == CacheUse(0, 6)
    forwards.clear()
    other, _ = split_dataset(images, test_size=0.2, seed=1)  # rows from both earlier shards
    assert {*other.content_hashes()} - {*train.content_hashes()}
    found, use = cached_features(backbone, other, cache)
    assert use == CacheUse(24, 0) and forwards == []
    _same(found, extract_features(backbone, other))
    forwards.clear()
    picked = images.subset([29, 3, 3, 17])
    found, use = cached_features(backbone, picked, cache)
    assert use == CacheUse(4, 0) and forwards == []
    _same(found, extract_features(backbone, picked))


def _write_folder(root, pixels: np.ndarray, start: int = 0) -> None:
    for i, image in enumerate(pixels, start):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")


def test_a_folder_with_ten_images_added_extracts_those_ten(tmp_path, backbone, forwards):
    cache = FeatureCache(tmp_path / "cache")
    _write_folder(tmp_path / "data", _pixels(20, 0))
    cached_features(backbone, load_folder(tmp_path / "data"), cache)
    _write_folder(tmp_path / "data", _pixels(10, 1), start=20)  # interleaved by name order
    grown = load_folder(tmp_path / "data")
    forwards.clear()
    found, use = cached_features(backbone, grown, cache)
    assert use == CacheUse(20, 10) and sum(forwards) == 10
    _same(found, extract_features(backbone, grown))
    forwards.clear()
    assert cached_features(backbone, grown, cache)[1] == CacheUse(30, 0) and forwards == []


def test_a_new_layer_is_extracted_only_where_no_shard_has_it(tmp_path, backbone, images, forwards):
    """A shard is used for the layers it holds, never for the ones it lacks."""
    cache = FeatureCache(tmp_path / "cache")
    cached_features(backbone, images.subset(range(10)), cache, layers=("final", "stage1"))
    cached_features(backbone, images.subset(range(10, 30)), cache, layers=("final",))
    forwards.clear()
    layers = ("final", "stage-4")  # stage1 by its other name
    found, use = cached_features(backbone, images, cache, layers=layers)
    assert use == CacheUse(10, 20) and sum(forwards) == 20
    _same(found, extract_features(backbone, images, layers=layers))
    forwards.clear()
    found, use = cached_features(backbone, images, cache, layers=("stage1",))
    assert use == CacheUse(30, 0) and forwards == []


def test_a_corrupt_shard_is_recomputed_with_a_notice(tmp_path, backbone, images, forwards):
    cache, broken = _damage_one_shard(tmp_path, backbone, images, _cut_short)
    forwards.clear()
    notices: list[str] = []
    found, use = cached_features(backbone, images, cache, notice=notices.append)
    assert use == CacheUse(18, 12) and sum(forwards) == 12
    assert len(notices) == 1 and str(broken) in notices[0] and "cannot be read" in notices[0]
    _same(found, extract_features(backbone, images))
    forwards.clear()
    notices.clear()  # the recomputed rows are a newer shard: the broken one is not read again
    assert cached_features(backbone, images, cache, notice=notices.append)[1] == CacheUse(30, 0)
    assert forwards == [] and notices == []


def _damage_one_shard(tmp_path, backbone, images, damage) -> tuple[FeatureCache, object]:
    """Two shards (12 and 18 images); ``damage`` is applied to the 12-image one."""
    cache = FeatureCache(tmp_path / "cache")
    cached_features(backbone, images.subset(range(12)), cache)
    cached_features(backbone, images.subset(range(12, 30)), cache)
    (model,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    broken = next(p for p in model.iterdir() if (p / "rows.txt").read_text().count("\n") == 11)
    damage(broken)
    return cache, broken


def _cut_short(shard) -> None:
    npy = shard / "final.npy"
    npy.write_bytes(npy.read_bytes()[:-100])  # its header promises more rows


def _flip_a_bit(shard) -> None:
    npy = shard / "final.npy"
    data = bytearray(npy.read_bytes())
    data[-7] ^= 0x02  # one mantissa bit of one feature: a valid, finite file still
    npy.write_bytes(bytes(data))


def _fill_with_nan(shard, *, old: bool = False) -> None:
    array = np.load(shard / "final.npy")
    np.save(shard / "final.npy", np.full_like(array, np.nan))
    if old:  # a shard of a version that kept no checksums: only finiteness is left to check
        (shard / shards.CHECKS_FILE).unlink()


@pytest.mark.parametrize(
    "damage",
    [_flip_a_bit, _fill_with_nan, lambda shard: _fill_with_nan(shard, old=True)],
    ids=["a flipped bit", "NaN rows", "NaN rows in a shard without checksums"],
)
def test_a_shard_failing_its_check_is_recomputed_with_a_notice(
    tmp_path, backbone, images, forwards, damage
):
    cache, broken = _damage_one_shard(tmp_path, backbone, images, damage)
    forwards.clear()
    notices: list[str] = []
    found, use = cached_features(backbone, images, cache, notice=notices.append)
    assert use == CacheUse(18, 12) and sum(forwards) == 12
    assert len(notices) == 1 and str(broken) in notices[0] and "final.npy" in notices[0]
    _same(found, extract_features(backbone, images))
    forwards.clear()
    notices.clear()  # the recomputed rows replaced the damaged shard (same images, same name)
    assert cached_features(backbone, images, cache, notice=notices.append)[1] == CacheUse(30, 0)
    assert forwards == [] and notices == []


def test_a_merge_drops_a_shard_failing_its_check(tmp_path, backbone, images, forwards):
    """A damaged shard is never merged: its rows would get a fresh, valid checksum."""
    cache, broken = _damage_one_shard(tmp_path, backbone, images, _flip_a_bit)
    cache.max_shards = 1
    cached_features(backbone, images.subset([0]), cache, layers=("stage1",))  # a third shard
    assert cache.compact(next(iter({e.key.split("/")[0] for e in _shards(cache)}))) == 0
    assert not broken.exists()
    forwards.clear()
    found, use = cached_features(backbone, images, cache)
    assert use == CacheUse(18, 12)
    _same(found, extract_features(backbone, images))


def _shards(cache: FeatureCache) -> list:
    return [e for e in cache.entries() if (e.path / "rows.txt").is_file()]


def test_past_max_shards_they_are_merged_and_every_row_kept(tmp_path, backbone, images, forwards):
    cache = FeatureCache(tmp_path / "cache", max_shards=3)
    for start in range(0, 30, 6):
        cached_features(backbone, images.subset(range(start, start + 6)), cache)
    cached_features(backbone, images.subset([0, 1]), cache, layers=("stage2",))
    # The 4th shard made 4 > 3: those merged; then the 5th and the stage2 one.
    assert sorted(e.images for e in _shards(cache)) == [2, 6, 24]
    forwards.clear()
    found, use = cached_features(backbone, images, cache)
    assert use == CacheUse(30, 0) and forwards == []
    _same(found, extract_features(backbone, images))


@pytest.mark.parametrize(
    ("dies_in", "left"),
    [("write_shard", 3), ("remove_entry", 5)],  # writing the merged shard; deleting inputs
)
def test_an_interrupted_merge_loses_no_row(
    tmp_path, monkeypatch, backbone, images, forwards, dies_in, left
):
    cache = FeatureCache(tmp_path / "cache", max_shards=1)
    for start in range(0, 18, 6):
        cached_features(backbone, images.subset(range(start, start + 6)), cache)
    assert [e.images for e in _shards(cache)] == [18]

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards, dies_in, killed)  # the merge's, not the run's own store
    for start in range(18, 30, 6):
        with pytest.raises(KeyboardInterrupt):
            cached_features(backbone, images.subset(range(start, start + 6)), cache)
    monkeypatch.undo()
    assert len(_shards(cache)) == left  # nothing deleted, and maybe merged shards too
    forwards.clear()
    found, use = cached_features(backbone, images, cache)
    assert use == CacheUse(30, 0) and forwards == []
    _same(found, extract_features(backbone, images))
    (model,) = {e.key.split("/")[0] for e in _shards(cache)}
    assert cache.compact(model) == left  # the next merge tidies up
    assert [e.images for e in _shards(cache)] == [30]


def test_a_shard_merged_away_mid_read_is_found_in_the_merged_one(
    tmp_path, monkeypatch, backbone, images, forwards
):
    """Another run sharing the cache merges the shards between our listing and our read."""
    cache = FeatureCache(tmp_path / "cache")
    for start in range(0, 30, 10):
        cached_features(backbone, images.subset(range(start, start + 10)), cache)
    model = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    original = shards._read
    merged: list[int] = []

    def racing(path):
        if not merged:
            merged.append(0)
            merged[0] = shards.compact(model, most=0)
        return original(path)

    monkeypatch.setattr(shards, "_read", racing)
    forwards.clear()
    notices: list[str] = []
    found, use = cached_features(backbone, images, cache, notice=notices.append)
    assert merged == [3] and use == CacheUse(30, 0) and forwards == [] and notices == []
    _same(found, extract_features(backbone, images))


def test_features_and_classifier_weights(tmp_path, backbone, images, forwards):
    """The ImageNet head plays no part in the features: with or without it, one key."""
    cache = FeatureCache(tmp_path / "cache")
    cached_features(backbone, images, cache)
    backbone.model.reset_classifier(0)
    forwards.clear()
    assert cached_features(backbone, images, cache)[1] == CacheUse(30, 0) and forwards == []


def test_entries_of_earlier_versions_are_served_listed_and_cleared(
    tmp_path, backbone, images, forwards
):
    """The previous version's entry (one per dataset, an image repeated as often as the
    dataset held it) is a shard; the first layout's (arrays right in the model's folder)
    serves nothing, and both are listed and cleared."""
    cache = FeatureCache(tmp_path / "cache")
    cached_features(backbone, images.subset([0]), cache)  # the model folder and the tag
    (model,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    old = images.subset([3, 4, 3, 5])
    shards.write_shard(model, extract_features(backbone, old), old.content_hashes())
    np.save(model / "final.npy", np.zeros((2, 8), np.float32))  # the first layout
    forwards.clear()
    found, use = cached_features(backbone, images.subset([5, 3]), cache)
    assert use == CacheUse(2, 0) and forwards == []
    _same(found, extract_features(backbone, images.subset([5, 3])))
    assert sorted(e.images or 0 for e in cache.entries()) == [0, 1, 4]
    assert cache.clear()[0] == 3
    assert not [p for p in model.parent.iterdir() if p.is_dir()]


def test_a_frozen_body_scores_a_dataset_from_the_cache(tmp_path, forwards):
    """Feature extraction's test score reads cached features: a test set scored again,
    or a second seed's split of the same images, runs no forward pass."""
    from headstart.estimator.image_classifier import ImageClassifier
    from headstart.strategies.registry import get_strategy

    train, test = split_dataset(from_arrays(_pixels(60, 3), [0, 1, 2] * 20), seed=0)
    config = get_strategy("feature-extraction").default_config().replace(image_size=64)
    clf = ImageClassifier(TINY, config=config, weights="none", cache_dir=tmp_path / "cache")
    clf.fit(train)
    assert sum(forwards) == len(train)
    cached = clf.predict_proba(test)
    assert sum(forwards) == len(train) + len(test)
    again = clf.predict_proba(test)
    assert sum(forwards) == len(train) + len(test)  # nothing new through the body
    np.testing.assert_array_equal(cached, again)

    clf.cache_dir = None  # the model's own forward pass: the same classes, close scores
    direct = clf.predict_proba(test)
    assert (direct.argmax(1) == cached.argmax(1)).mean() >= 0.9
    assert np.abs(direct - cached).max() < 0.05

    clf.cache_dir = tmp_path / "cache"
    forwards.clear()
    train_1, test_1 = split_dataset(from_arrays(_pixels(60, 3), [0, 1, 2] * 20), seed=1)
    ImageClassifier(TINY, config=config, weights="none", cache_dir=clf.cache_dir).fit(train_1)
    clf.predict_proba(test_1)
    assert forwards == []  # a second seed's split: every image was seen
