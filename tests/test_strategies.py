"""Strategies and the estimator: what each strategy promises on the default family
(frozen means bit-identical, the cache means no forward pass). The contract every
strategy keeps on every architecture family is in test_contract.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from fixtures_images import colour_data, tiny_weights_file
from safetensors.torch import load_file, save_file

from headstart.data.arrays import from_arrays
from headstart.errors import ConfigError, DataError, NotFittedError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.strategies import common as strategies_module
from headstart.strategies.registry import get_strategy
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig
from headstart.train.freezing import layer_groups, resolve_frozen_count

TINY = "test_efficientnet"


def _config(name: str, **changes) -> TrainConfig:
    base = get_strategy(name).default_config()
    return base.replace(epochs=2, batch_size=8, image_size=32, patience=0, **changes)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A fixed random initialisation saved to disk, so 'before training' is known exactly."""
    path = tiny_weights_file(tmp_path_factory.mktemp("weights"), seed=123, model=TINY)
    return Path(path), load_file(path)


def test_feature_extraction_learns_the_colours(tiny_weights):
    clf = ImageClassifier(TINY, "feature-extraction", _config("feature-extraction"))
    clf.weights = tiny_weights[0]
    clf.fit(colour_data(seed=0))
    assert clf.score(colour_data(per_class=6, seed=1)) >= 0.9


def test_feature_extraction_leaves_the_base_bit_identical(tiny_weights):
    path, initial = tiny_weights
    clf = ImageClassifier(TINY, "feature-extraction", _config("feature-extraction"), weights=path)
    clf.fit(colour_data())
    for key, value in clf.model_.body.state_dict().items():
        assert torch.equal(value, initial[key]), key


@pytest.mark.parametrize("bn_policy", ["eval", "train"])
def test_fine_tune_frozen_groups_and_their_batchnorm_stay_bit_identical(tiny_weights, bn_policy):
    path, initial = tiny_weights
    config = _config("fine-tune", freeze_groups=3, bn_policy=bn_policy, lp_ft=False)
    clf = ImageClassifier(TINY, "fine-tune", config, weights=path).fit(colour_data())
    groups = layer_groups(clf.model_.body)
    frozen_count = resolve_frozen_count(groups, 3)
    frozen_prefixes = {
        n.rsplit(".", 1)[0] for g in groups[:frozen_count] for n in g.parameter_names
    }
    state = clf.model_.body.state_dict()
    changed_trainable = changed_trainable_stats = False
    for key, value in state.items():
        module = key.rsplit(".", 1)[0]
        is_stat = key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        if module in frozen_prefixes:
            assert torch.equal(value, initial[key]), f"frozen {key} moved"
        elif is_stat:
            changed_trainable_stats |= not torch.equal(value, initial[key])
        else:
            changed_trainable |= not torch.equal(value, initial[key])
    assert changed_trainable, "the trainable groups did not learn"
    # "eval" holds every BatchNorm's statistics; "train" lets the trainable groups' move
    assert changed_trainable_stats == (bn_policy != "eval")


def test_plan_is_reported_before_training(tiny_weights):
    events = []

    class Recorder(Callback):
        def on_plan(self, plan):
            events.append(("plan", plan))

        def on_epoch(self, record):
            events.append(("epoch", record))

    config = _config("fine-tune", freeze_groups=2)
    ImageClassifier(TINY, "fine-tune", config, weights=tiny_weights[0], callback=Recorder()).fit(
        colour_data()
    )
    assert events[0][0] == "plan"
    plan = events[0][1]
    states = [row.trainable for row in plan.rows]
    assert states[:2] == [False, False] and all(states[2:])
    assert plan.rows[-1].group == "head (new)"
    assert all(row.lr is None for row in plan.rows[:2]) and all(r.lr for r in plan.rows[2:])
    text = plan.format()
    assert "frozen" in text and "trainable" in text and "BatchNorm" in text


def _count_backbone_forwards(monkeypatch) -> list[int]:
    """Images through the backbone, by either entry point (final-only or with stages)."""
    calls: list[int] = []
    cls = type(timm.create_model(TINY))
    for name in ("forward_features", "forward_intermediates"):
        original = getattr(cls, name)

        def counting(self, x, *args, _original=original, **kwargs):
            calls.append(len(x))
            return _original(self, x, *args, **kwargs)

        monkeypatch.setattr(cls, name, counting)
    return calls


def test_second_feature_extraction_run_makes_no_backbone_forward_call(
    tmp_path, monkeypatch, tiny_weights
):
    config = _config("feature-extraction")
    data = colour_data()
    calls = _count_backbone_forwards(monkeypatch)
    first = ImageClassifier(
        TINY, "feature-extraction", config, weights=tiny_weights[0], cache_dir=tmp_path
    ).fit(data)
    assert sum(calls) >= len(data)
    calls.clear()
    second = ImageClassifier(
        TINY, "feature-extraction", config, weights=tiny_weights[0], cache_dir=tmp_path
    ).fit(data)
    forwards_during_fit = sum(calls)
    assert forwards_during_fit <= 2  # only the 2-image probe that measures the feature width
    calls.clear()
    unfitted = ImageClassifier(TINY, "feature-extraction", config, weights=tiny_weights[0])
    assert calls == []  # constructing builds and runs nothing: the work waits for fit
    with pytest.raises(NotFittedError, match="not fitted"):
        unfitted.predict_proba(data)
    assert calls == []
    np.testing.assert_array_equal(
        first.model_.head.weight.detach(), second.model_.head.weight.detach()
    )

    # one changed image: that one computed afresh, the rest from the cache, and said so
    calls.clear()
    pixels = np.stack([np.asarray(data.image(i)) for i in range(len(data))])
    pixels[0, 0, 0, 0] ^= 1
    changed = from_arrays(pixels, [data.classes[k] for k in data.labels])
    stages: list[str] = []
    recorder = Callback()
    recorder.on_stage = lambda name, detail: stages.append(detail)
    ImageClassifier(
        TINY,
        "feature-extraction",
        config,
        weights=tiny_weights[0],
        cache_dir=tmp_path,
        callback=recorder,
    ).fit(changed)
    # The changed image alone; the 2-image batches are the width probe and the fast
    # path's check of its folded copy.
    assert [n for n in calls if n != 2] == [1]
    assert any(text.endswith("images from the cache, 1 extracted") for text in stages)


def test_changed_weight_file_recomputes_features(tmp_path, monkeypatch, tiny_weights):
    path, initial = tiny_weights
    config = _config("feature-extraction")
    ImageClassifier(TINY, "feature-extraction", config, weights=path, cache_dir=tmp_path).fit(
        colour_data()
    )
    other = dict(initial)
    other["conv_stem.weight"] = initial["conv_stem.weight"] * 1.01
    other_path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in other.items()}, str(other_path))
    calls = _count_backbone_forwards(monkeypatch)
    ImageClassifier(TINY, "feature-extraction", config, weights=other_path, cache_dir=tmp_path).fit(
        colour_data()
    )
    assert sum(calls) >= 30


def test_augmentation_cannot_use_the_cache_and_says_so(tiny_weights):
    plans = []

    class Recorder(Callback):
        def on_plan(self, plan):
            plans.append(plan)

    config = _config("feature-extraction", augment=True)
    clf = ImageClassifier(
        TINY, "feature-extraction", config, weights=tiny_weights[0], callback=Recorder()
    ).fit(colour_data())
    assert any("cannot be cached" in note for note in plans[0].notes)
    assert len(clf.history_) == 2  # gradient epochs over the frozen base
    for key, value in clf.model_.body.state_dict().items():
        assert torch.equal(value, tiny_weights[1][key]), key


def test_mlp_head_and_balanced_class_weights(tiny_weights, monkeypatch):
    from headstart.strategies import common

    real_features = common.features

    def one_dead_channel(ctx, dataset, label):  # as a ReLU channel that never fires
        found = real_features(ctx, dataset, label)
        found[:, 0] = 0.5
        return found

    monkeypatch.setattr(common, "features", one_dead_channel)
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 5)
    images = rng.integers(0, 60, size=(25, 20, 20, 3), dtype=np.uint8)
    images[labels == 1, :, :, 2] += 150
    data = from_arrays(images, labels)
    config = _config("feature-extraction", head="mlp", class_weights="balanced", head_hidden=16)
    clf = ImageClassifier(TINY, "feature-extraction", config, weights=tiny_weights[0]).fit(data)
    assert isinstance(clf.model_.head, torch.nn.Sequential)
    assert clf.history_  # the MLP trains with the loop
    assert clf.evaluate(data)["balanced_accuracy"] > 0.5
    # A feature constant on these images (the dead channel) is ignored, not divided by
    # a spread of ~0: the folded first layer stays at the scale it trained at.
    first = clf.model_.head[0].weight.detach()
    assert float(first.abs().max()) < 1e3


def test_standardising_ignores_constant_features():
    from headstart.strategies.common import standardising_scale

    scale = standardising_scale(np.array([2.0, 0.5, 0.0, 1e-9, 1.0]))
    np.testing.assert_allclose(scale, [0.5, 2.0, 0.0, 0.0, 1.0])


def test_stage_features_feed_the_head(tiny_weights, tmp_path):
    config = _config("feature-extraction", layers=("stage2", "final"))
    clf = ImageClassifier(TINY, "feature-extraction", config, weights=tiny_weights[0])
    clf.fit(colour_data())
    assert clf.model_.head.in_features > clf.model_.body.num_features
    clf.save(tmp_path / "m")
    test = colour_data(per_class=3, seed=2)
    loaded = ImageClassifier.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(test), clf.predict_proba(test))


def test_unfitted_estimator_raises_named_error():
    with pytest.raises(NotFittedError, match="not fitted"):
        ImageClassifier(TINY).predict(colour_data())


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="fine-tune"):
        ImageClassifier(TINY, "fine-tuning").fit(colour_data())


def test_config_validation_names_the_parameter():
    with pytest.raises(ConfigError, match=r"'head_lr' parameter of TrainConfig must be > 0"):
        TrainConfig(head_lr=-1.0)
    with pytest.raises(ConfigError, match="'bn_policy'"):
        TrainConfig(bn_policy="sometimes")
    with pytest.raises(ConfigError, match="'epoch'"):
        TrainConfig().replace(epoch=3)


def test_evaluate_accepts_a_subset_of_classes_and_rejects_unknown(tiny_weights):
    clf = ImageClassifier(TINY, "feature-extraction", _config("feature-extraction"))
    clf.weights = tiny_weights[0]
    clf.fit(colour_data())
    data = colour_data(per_class=4, seed=3)
    only_red = data.subset([i for i in range(len(data)) if data.classes[data.labels[i]] == "red"])
    reds = from_arrays(np.stack([np.asarray(img) for img, _ in only_red]), ["red"] * len(only_red))
    metrics = clf.evaluate(reds)
    assert metrics["per_class"][clf.classes_.index("red")]["support"] == len(reds)
    strangers = from_arrays(np.zeros((2, 8, 8, 3), dtype=np.uint8), ["purple", "purple"])
    with pytest.raises(DataError, match="purple"):
        clf.evaluate(strangers)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_balanced_class_weights_reach_the_loss(monkeypatch, tiny_weights, head):
    """Inverse-frequency weights (n / (classes * count)) are what the head is trained with."""
    seen = {}
    real_probe, real_loop = strategies_module.fit_linear_probe, strategies_module.train_loop

    def probe_spy(*args, class_weights=None, **kwargs):
        seen["weights"] = class_weights
        return real_probe(*args, class_weights=class_weights, **kwargs)

    def loop_spy(*args, class_weights=None, **kwargs):
        seen["weights"] = class_weights.numpy() if class_weights is not None else None
        return real_loop(*args, class_weights=class_weights, **kwargs)

    monkeypatch.setattr(strategies_module, "fit_linear_probe", probe_spy)
    monkeypatch.setattr(strategies_module, "train_loop", loop_spy)
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 5)
    data = from_arrays(rng.integers(0, 255, size=(25, 20, 20, 3), dtype=np.uint8), labels)
    config = _config("feature-extraction", head=head, class_weights="balanced", head_hidden=8)
    ImageClassifier(TINY, "feature-extraction", config, weights=tiny_weights[0]).fit(data)
    np.testing.assert_allclose(seen["weights"], [25 / (2 * 20), 25 / (2 * 5)], rtol=1e-6)
