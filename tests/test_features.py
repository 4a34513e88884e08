"""Feature extraction: fast path agrees with fp32, the cache is keyed by content."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from headstart.backbones.registry import create_backbone
from headstart.data.arrays import from_arrays
from headstart.errors import ConfigError
from headstart.features.cache import FeatureCache, cached_features
from headstart.features.extract import extract_features
from headstart.features.fastpath import FOLD_CHECK_IMAGES, fold_batchnorm
from headstart.train.probe import fit_linear_probe

TINY = "test_efficientnet"


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return create_backbone(TINY, weights="none", image_size=64)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 20, 20, 3), dtype=np.uint8)
    return from_arrays(pixels, [0, 1, 2] * 4)


def _count_forwards(monkeypatch, backbone) -> list[int]:
    """Batch sizes through the backbone, less the fast path's check of its folded copy
    (FOLD_CHECK_IMAGES random images; the datasets here are never that small)."""
    calls: list[int] = []
    original = backbone.model.forward_features

    def counting(x):
        if len(x) != FOLD_CHECK_IMAGES:
            calls.append(len(x))
        return original(x)

    monkeypatch.setattr(backbone.model, "forward_features", counting)
    return calls


def test_shapes_and_layers(backbone, images):
    features = extract_features(backbone, images, layers=("final", "stage1"), batch_size=5)
    assert features["final"].shape == (12, backbone.num_features)
    assert features["final"].dtype == np.float32
    assert features["stage1"].shape[0] == 12
    assert np.isfinite(features["stage1"]).all()


def test_unknown_layer_is_a_config_error(backbone, images):
    with pytest.raises(ConfigError, match="'layers'"):
        extract_features(backbone, images, layers=("stage99",))


@pytest.mark.usefixtures("bf16_cpu")
def test_fast_path_matches_fp32(backbone, images):
    """bf16 autocast changes the numbers slightly, never the picture."""
    fast = extract_features(backbone, images, fast=True)["final"]
    exact = extract_features(backbone, images, fast=False)["final"]
    assert not np.array_equal(fast, exact)  # the fast path really ran: bf16 is not fp32
    cosine = (fast * exact).sum(1) / (np.linalg.norm(fast, axis=1) * np.linalg.norm(exact, axis=1))
    assert cosine.min() > 0.99
    # the backbone is left in its normal memory format
    assert backbone.model.conv_stem.weight.is_contiguous()


def _randomise_batchnorm(model: nn.Module) -> None:
    """Statistics and affine terms far from the identity, so folding has work to do."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.1)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator))


def test_folding_batchnorm_keeps_the_output_and_leaves_the_model_alone(backbone):
    model = backbone.model.eval()
    _randomise_batchnorm(model)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    before = {name: value.clone() for name, value in model.state_dict().items()}
    folded, count = fold_batchnorm(model, torch.randn(2, 3, 64, 64))
    assert count == norms > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    images = torch.randn(3, 3, 64, 64)  # not the sample the fold was checked on
    with torch.no_grad():
        torch.testing.assert_close(folded(images), model(images), rtol=1e-4, atol=1e-4)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == norms


class _NormBeforeConv(nn.Module):
    """Registered conv-then-norm, but the norm runs first: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


def test_folding_is_refused_where_the_norm_does_not_follow_the_conv():
    model = _NormBeforeConv().eval()
    _randomise_batchnorm(model)
    folded, count = fold_batchnorm(model, torch.randn(2, 4, 8, 8))
    assert folded is model and count == 0
    assert isinstance(model.norm, nn.BatchNorm2d)


def test_second_run_does_no_forward_pass(tmp_path, monkeypatch, backbone, images):
    cache = FeatureCache(tmp_path / "cache")
    calls = _count_forwards(monkeypatch, backbone)
    first, was_cached = cached_features(backbone, images, cache)
    assert not was_cached and sum(calls) == 12
    calls.clear()
    second, was_cached = cached_features(backbone, images, cache)
    assert was_cached and calls == []
    np.testing.assert_array_equal(first["final"], second["final"])


def test_changed_image_or_weights_recompute(tmp_path, monkeypatch, backbone, images):
    cache = FeatureCache(tmp_path / "cache")
    cached_features(backbone, images, cache)
    calls = _count_forwards(monkeypatch, backbone)

    pixels = np.stack([np.asarray(images.image(i)) for i in range(len(images))])
    pixels[3, 0, 0, 0] ^= 1  # one bit of one image: that image, and only it, is computed
    _, use = cached_features(backbone, from_arrays(pixels, images.labels), cache)
    assert (use.from_cache, use.extracted) == (11, 1) and sum(calls) == 1

    calls.clear()
    with torch.no_grad():
        backbone.model.conv_stem.weight[0, 0, 0, 0] += 1e-3
    _, was_cached = cached_features(backbone, images, cache)
    assert not was_cached and sum(calls) == 12


def test_changed_preprocessing_recomputes(tmp_path, images):
    cache = FeatureCache(tmp_path / "cache")
    torch.manual_seed(0)
    small = create_backbone(TINY, weights="none", image_size=64)
    cached_features(small, images, cache)
    torch.manual_seed(0)
    large = create_backbone(TINY, weights="none", image_size=96)
    _, was_cached = cached_features(large, images, cache)
    assert not was_cached


def test_a_corrupt_cache_file_is_recomputed(tmp_path, backbone, images):
    cache = FeatureCache(tmp_path / "cache")
    first, _ = cached_features(backbone, images, cache)
    (npy,) = (tmp_path / "cache").rglob("final.npy")
    npy.write_bytes(npy.read_bytes()[:50])
    notices: list[str] = []
    again, was_cached = cached_features(backbone, images, cache, notice=notices.append)
    assert not was_cached
    assert len(notices) == 1 and "cannot be read" in notices[0]
    np.testing.assert_allclose(again["final"], first["final"])
    assert not list((tmp_path / "cache").rglob(".*.tmp*"))  # no temp nor lock files


def test_linear_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 5
    labels = np.repeat(np.arange(3), 40)
    features = centers[labels] + rng.normal(size=(120, 16))
    probe = fit_linear_probe(features, labels, 3)
    assert probe.score(features, labels) > 0.95
    # standardisation is folded into the head: raw features in, probabilities out
    proba = probe.predict_proba(features[:5])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)


def test_linear_probe_rejects_bad_l2():
    with pytest.raises(ConfigError, match="'l2'"):
        fit_linear_probe(np.zeros((4, 2)), np.array([0, 1, 0, 1]), 2, l2=-1)


@pytest.mark.parametrize("name", ["test_efficientnet", "tf_efficientnet_lite0"])
def test_batched_scaling_is_bit_identical_to_the_per_image_transform(name):
    """The fast path's collate does ToTensor + Normalize per batch: same bits, less overhead."""
    from PIL import Image

    from headstart.backbones.registry import create_backbone as create
    from headstart.features.fastpath import split_transform

    transform = create(name, weights="none", image_size=48).preprocessing.transform()
    geometry, finish = split_transform(transform)
    rng = np.random.default_rng(3)
    same = [Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)) for _ in range(5)]
    batch, labels = finish([(geometry(image), k) for k, image in enumerate(same)])
    assert torch.equal(batch, torch.stack([transform(image) for image in same]))
    assert labels.tolist() == [0, 1, 2, 3, 4]
    # Anything else takes the per-image transforms, and fails exactly as they would:
    # two sizes (no geometry applied here) cannot be stacked.
    mixed = [same[0], Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))]
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        finish([(image, 0) for image in mixed])
    assert split_transform(lambda image: image) is None


def test_a_subset_or_relabelled_set_is_served_from_a_cached_superset(
    tmp_path, monkeypatch, backbone, images
):
    """compare's draws and semi-supervised's unlabelled rest are subsets of one training set."""
    cache = FeatureCache(tmp_path / "cache")
    full, _ = cached_features(backbone, images, cache)
    calls = _count_forwards(monkeypatch, backbone)
    picked = [7, 2, 11, 2]
    subset, was_cached = cached_features(backbone, images.subset(picked), cache)
    assert was_cached and calls == []
    np.testing.assert_array_equal(subset["final"], full["final"][picked])
    pixels = np.stack([np.asarray(images.image(i)) for i in range(len(images))])
    relabelled = from_arrays(pixels, [2, 1, 0] * 4)  # same images, other labels
    again, was_cached = cached_features(backbone, relabelled, cache)
    assert was_cached and calls == []
    np.testing.assert_array_equal(again["final"], full["final"])
    # One image the cache has never seen: computed, and only then.
    pixels[0] = 255 - pixels[0]
    _, was_cached = cached_features(backbone, from_arrays(pixels[:3], [0, 1, 2]), cache)
    assert not was_cached and calls


def test_rows_are_not_picked_across_models(tmp_path, monkeypatch, images):
    cache = FeatureCache(tmp_path / "cache")
    torch.manual_seed(0)
    first = create_backbone(TINY, weights="none", image_size=64)
    cached_features(first, images, cache)
    torch.manual_seed(1)  # other weights: the same images must be computed again
    second = create_backbone(TINY, weights="none", image_size=64)
    _, was_cached = cached_features(second, images.subset([0, 1]), cache)
    assert not was_cached


def test_rows_are_gathered_from_several_entries(tmp_path, monkeypatch, backbone, images):
    """compare caches small draws first: a later set spanning them needs no forward pass."""
    cache = FeatureCache(tmp_path / "cache")
    full = extract_features(backbone, images)["final"]
    cached_features(backbone, images.subset([0, 1, 2, 3]), cache)
    cached_features(backbone, images.subset(list(range(4, 12))), cache)
    calls = _count_forwards(monkeypatch, backbone)
    found, was_cached = cached_features(backbone, images.subset([11, 0, 5, 3]), cache)
    assert was_cached and calls == []
    np.testing.assert_allclose(found["final"], full[[11, 0, 5, 3]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("layer", "stage"), [("final", None), ("stage0", 0), ("stage-1", 4), ("stage-5", 0)]
)
def test_layer_names_count_from_either_end(backbone, layer, stage):
    from headstart.features.layers import parse_layer

    assert len(backbone.model.feature_info) == 5
    assert parse_layer(layer, backbone.model) == stage


@pytest.mark.parametrize(
    "layer",
    ["stage5", "stage-6", "stage-0", "stage--1", "stage01", "stage²", "final_2x3", "final_5x5",
     "stage-1_", "final2x2"],
)  # fmt: skip
def test_bad_layer_names_are_config_errors(backbone, layer):
    from headstart.features.layers import parse_layer
    from headstart.train.config import TrainConfig

    with pytest.raises(ConfigError, match="'layers'"):
        parse_layer(layer, backbone.model)
    if layer not in ("stage5", "stage-6"):  # well-formed names: only the model can judge
        with pytest.raises(ConfigError, match="'layers'"):
            TrainConfig(layers=(layer,))


def _age(folder, days: float) -> None:
    """Backdate an entry: its folder and files last touched ``days`` ago."""
    import os
    import time

    when = time.time() - days * 86400
    for path in [folder, *folder.iterdir()]:
        os.utime(path, (when, when))


def test_cache_entries_are_listed_and_cleared_by_age(tmp_path, backbone, images):
    cache = FeatureCache(tmp_path / "cache")
    cached_features(backbone, images, cache, layers=("final", "stage1"))
    other = np.random.default_rng(5).integers(0, 256, size=(5, 20, 20, 3), dtype=np.uint8)
    cached_features(backbone, from_arrays(other, [0, 1, 2, 0, 1]), cache)  # images not cached
    (tmp_path / "cache" / "notes.txt").write_text("mine")  # not the cache's: never touched
    (tmp_path / "cache" / "keep").mkdir()
    entries = cache.entries()
    assert sorted(e.images for e in entries) == [5, 12]
    assert {e.layers for e in entries} == {("final",), ("final", "stage1")}
    assert all(e.size > 0 for e in entries)
    old = next(e for e in entries if e.images == 5)
    # a writer killed mid-write (temp and lock file), and one killed as it finished
    for name in (".final.npy.d34d.tmp", ".final.npy.d34d.tmp.lock", ".rows.txt.g0ne.tmp.lock"):
        (old.path / name).write_bytes(b"partial")
    _age(old.path, days=10)

    assert cache.clear(older_than_days=30) == (0, 0)
    removed, freed = cache.clear(older_than_days=1)
    assert (removed, freed) == (1, old.size)
    assert not old.path.exists()  # the stale files went too, so the folder could
    assert [e.images for e in cache.entries()] == [12]
    assert cache.clear() == (1, sum(e.size for e in entries) - old.size)
    assert cache.entries() == []
    assert (tmp_path / "cache" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "cache" / "keep").is_dir()
    with pytest.raises(ConfigError, match="older_than_days"):
        cache.clear(older_than_days=-1)


def test_a_cache_hit_counts_as_use(tmp_path, backbone, images):
    cache = FeatureCache(tmp_path / "cache")
    cached_features(backbone, images, cache)
    (entry,) = cache.entries()
    _age(entry.path, days=10)
    _, was_cached = cached_features(backbone, images, cache)
    assert was_cached
    assert cache.clear(older_than_days=1) == (0, 0)  # used just now: kept


def test_a_cache_that_cannot_be_written_costs_nothing_computed(tmp_path, backbone, images):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    cache = FeatureCache(blocked)
    with pytest.warns(RuntimeWarning, match="could not store features"):
        features, was_cached = cached_features(backbone, images, cache)
    assert not was_cached and features["final"].shape == (12, backbone.num_features)
    notices: list[str] = []
    features, _ = cached_features(backbone, images, cache, notice=notices.append)
    assert len(notices) == 1 and str(blocked) in notices[0]


def test_a_folder_the_cache_did_not_make_is_not_cleared(tmp_path):
    """Folders named like cache keys, but no CACHEDIR.TAG: e.g. --cache-dir pointed at
    a folder of experiment runs. Nothing goes."""
    root = tmp_path / "runs"
    run = root / ("a" * 32) / ("b" * 32)
    run.mkdir(parents=True)
    np.save(run / "final.npy", np.zeros((2, 3), np.float32))
    cache = FeatureCache(root)
    assert len(cache.entries()) == 1
    with pytest.raises(ConfigError, match="CACHEDIR.TAG"):
        cache.clear()
    assert (run / "final.npy").is_file()


def test_either_spelling_of_a_stage_is_served_by_one_cache_entry(
    tmp_path, monkeypatch, backbone, images
):
    cache = FeatureCache(tmp_path / "cache")
    first, _ = cached_features(backbone, images, cache, layers=("stage4", "stage-2", "final"))
    calls = _count_forwards(monkeypatch, backbone)
    again, was_cached = cached_features(backbone, images, cache, layers=("stage-1", "stage3"))
    assert was_cached and calls == []
    np.testing.assert_array_equal(again["stage-1"], first["stage4"])
    np.testing.assert_array_equal(again["stage3"], first["stage-2"])
    (entry,) = cache.entries()
    assert entry.layers == ("final", "stage3", "stage4")


def test_a_grid_layer_pools_regions_as_adaptive_pooling_does(backbone, images):
    from torch.nn import functional as F

    from headstart.features.layers import grid_pool, parse_layer, stored_layer_name

    for shape in [(2, 5, 7, 9), (1, 3, 2, 2), (2, 4, 8, 8)]:
        x = torch.randn(*shape)
        for grid in (1, 2, 3):
            expected = F.adaptive_avg_pool2d(x, grid).flatten(1)
            torch.testing.assert_close(grid_pool(x, grid), expected, rtol=1e-6, atol=1e-6)
    assert parse_layer("stage-1_2x2", backbone.model) == 4
    assert stored_layer_name("stage-1_2x2", backbone.model) == "stage4_2x2"
    features = extract_features(
        backbone, images, layers=("final", "final_2x2", "stage-1_3x3"), fast=False
    )
    width = features["final"].shape[1]
    assert features["final_2x2"].shape == (12, 4 * width)
    # the mean of the four regions is the global mean when the map splits evenly
    regions = features["final_2x2"].reshape(12, width, 4)
    np.testing.assert_allclose(regions.mean(2), features["final"], rtol=1e-4, atol=1e-5)
    channels = backbone.model.feature_info[4]["num_chs"]
    assert features["stage-1_3x3"].shape == (12, 9 * channels)


def test_a_grid_on_a_vit_final_output_fails_that_candidate_alone():
    from headstart.data.arrays import from_arrays as arrays
    from headstart.rank import Candidate, rank
    from headstart.rank.ranking import SPATIAL_LAYERS

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    data = arrays(rng.integers(0, 256, size=(12, 20, 20, 3), dtype=np.uint8), labels)
    candidates = [Candidate("test_vit", 32, ("final",)), Candidate("test_vit", 32, SPATIAL_LAYERS)]
    ranking = rank(data, candidates, weights="none", folds=2)
    assert [s.candidate.layers for s in ranking.ranked] == [("final",)]
    (failed,) = ranking.failed
    assert "final_2x2" in failed.error and "tokens" in failed.error


def test_a_grid_on_a_channels_last_final_map_pools_its_regions():
    from torch.nn import functional as F

    from headstart.features.layers import parse_layer, pooled_features

    torch.manual_seed(0)
    model = create_backbone("test_mambaout", weights="none", image_size=64).model.eval()
    assert model.output_fmt == "NHWC"  # the case this test is for
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = pooled_features(model, images, {"final_2x2": parse_layer("final_2x2", model)})
        channels_first = model.forward_features(images).permute(0, 3, 1, 2)
    expected = F.adaptive_avg_pool2d(channels_first, 2).flatten(1)
    torch.testing.assert_close(out["final_2x2"], expected, rtol=1e-5, atol=1e-5)


def test_a_grid_on_a_vit_is_refused_before_training():
    from headstart.estimator import ImageClassifier
    from headstart.train.config import TrainConfig

    clf = ImageClassifier("test_vit", config=TrainConfig(layers=("final_2x2",), image_size=32),
                          weights="none")  # fmt: skip
    with pytest.raises(ConfigError, match="tokens"):
        clf.prepare()


def test_a_cache_asked_for_other_layers_keeps_serving_the_first(tmp_path, backbone, images):
    cache = FeatureCache(tmp_path / "cache")
    cached_features(backbone, images, cache, layers=("final",))
    cached_features(backbone, images, cache, layers=("stage-1",))
    _, use = cached_features(backbone, images, cache, layers=("final",))
    assert use.from_cache == len(images) and use.extracted == 0
