"""The contract, in timm's spirit: every registered strategy on four architecture families.

For each (strategy, family) pair, with timm's tiny ``test_*`` models at 32 px: fit on
tiny in-memory data, predict, save, load (the same predictions after loading), check the
plan the callback receives against the model's real layer groups (and learning rates),
check that the head takes the width the feature layers promise, and check that what
the plan calls frozen is bit-identical after training (feature extraction and
semi-supervised: the whole body; fine-tune: its frozen groups), while scratch moves
every group; then export to ONNX and check its answers against an fp32 forward pass.
Pretrained strategies load a random initialisation saved as safetensors, so "before
training" is known exactly and no network is needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import colour_data, tiny_weights_file
from safetensors.torch import load_file

from headstart.errors import BackboneError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.export.runtime import OnnxClassifier
from headstart.features.layers import parse_layer
from headstart.strategies import Plan, all_strategies
from headstart.strategies import scratch as scratch_module
from headstart.strategies.registry import get_strategy
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig
from headstart.train.freezing import LayerGroup, layer_groups
from headstart.train.network import head_output_layer

FAMILIES = {
    "efficientnet": "test_efficientnet",
    "resnet": "test_resnet",
    "vit": "test_vit",
    "convnext": "test_convnext",
}
STRATEGY_NAMES = sorted(all_strategies())
CLASSES = ["blue", "green", "red"]
SEED = 0


def _config(strategy: str) -> TrainConfig:
    """The strategy's own defaults (feature layers, freezing, LP-FT, augmentation), made
    small: one epoch of a few 32 px images."""
    base = get_strategy(strategy).default_config()
    return base.replace(epochs=1, batch_size=8, image_size=32, patience=0, seed=SEED)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Per family: a seeded random initialisation saved as safetensors."""
    folder = tmp_path_factory.mktemp("contract-weights")
    files = {}
    for family, model in FAMILIES.items():
        (folder / family).mkdir()
        files[family] = Path(tiny_weights_file(folder / family, seed=7, model=model))
    return files


class PlanRecorder(Callback):
    def __init__(self) -> None:
        self.plans: list[Plan] = []

    def on_plan(self, plan: Plan) -> None:
        self.plans.append(plan)


def _snapshot_scratch_init(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """Scratch has no weights file to compare with: keep its random body as training starts."""
    snapshot: dict[str, torch.Tensor] = {}
    real = scratch_module.train_images

    def recording(ctx, model, *args, **kwargs):
        snapshot.update({k: v.clone() for k, v in model.body.state_dict().items()})
        return real(ctx, model, *args, **kwargs)

    monkeypatch.setattr(scratch_module, "train_images", recording)
    return snapshot


def _feature_width(body: torch.nn.Module, layers: tuple[str, ...]) -> int:
    """What the head takes: the final pooled width plus each stage's channels (a ViT's
    blocks give tokens; pooled, they must still be one vector of that width per image)."""
    stages = [parse_layer(layer, body) for layer in layers]
    return sum(body.num_features if i is None else body.feature_info[i]["num_chs"] for i in stages)


def _frozen_count(strategy: str, groups: list[LayerGroup], config: TrainConfig) -> int:
    """How many body groups the strategy promises to freeze."""
    body = sum(1 for g in groups if not g.is_head)
    if strategy in ("feature-extraction", "semi-supervised"):
        return body
    if strategy == "fine-tune":  # worked out here, not by the library's own function
        wanted = config.freeze_groups
        return wanted if wanted >= 0 else body + wanted
    return 0


def _expected_lrs(strategy: str, config: TrainConfig, rows: int, frozen: int) -> list:
    """Per plan row: None when frozen (or solved in closed form), else the layer-wise LR
    (``base_lr`` at the top trainable group, times ``layer_decay`` per group below)."""
    body = [None] * frozen
    trainable = rows - frozen
    body += [config.base_lr * config.layer_decay ** (trainable - 1 - i) for i in range(trainable)]
    if strategy in ("feature-extraction", "semi-supervised"):
        return body + [None if config.head == "linear" else config.head_lr]
    if strategy == "fine-tune" and config.lp_ft:
        return body + [config.base_lr * 5]
    return body + [config.head_lr]


def _check_plan(
    plan: Plan, model: torch.nn.Module, frozen: int, strategy: str, config: TrainConfig
) -> None:
    """The plan names the body's real groups in order, frozen ones first and marked so."""
    body = [g for g in layer_groups(model.body) if not g.is_head]
    rows, head = plan.rows[:-1], plan.rows[-1]
    assert plan.strategy == strategy
    assert [r.group for r in rows] == [g.name for g in body]
    assert [r.parameters for r in rows] == [g.num_parameters for g in body]
    for row, group in zip(rows, body, strict=True):  # the name says where its parameters live
        assert row.group != "head", f"body group {row.group!r} reads as the new head"
        parts = row.group.split("+")
        for name in group.parameter_names:
            assert any(name == p or name.startswith(f"{p}.") for p in parts), (row.group, name)
    assert head.group == "head (new)" and head.trainable
    assert head.parameters == sum(p.numel() for p in model.head.parameters())
    assert plan.total_parameters == sum(p.numel() for p in model.parameters())
    assert [r.trainable for r in rows] == [i >= frozen for i in range(len(rows))]
    expected = _expected_lrs(strategy, config, len(rows), frozen)
    for row, lr in zip(plan.rows, expected, strict=True):
        assert row.lr == (None if lr is None else pytest.approx(lr, rel=1e-9)), row
    frozen_size = sum(r.parameters for r in rows[:frozen])
    assert plan.trainable_parameters + frozen_size == plan.total_parameters
    text = plan.format()
    for row in plan.rows:
        state = "trainable" if row.trainable else "frozen"
        line = rf"^  {re.escape(row.group)} +{row.parameters:,} +{state} "
        assert re.search(line, text, re.MULTILINE), f"no row {row} in\n{text}"


def _check_frozen(
    model: torch.nn.Module, initial: dict[str, torch.Tensor], frozen: int, strategy: str
) -> None:
    """Frozen groups (their BatchNorm statistics too) are bit-identical; trainable ones moved."""
    groups = [g for g in layer_groups(model.body) if not g.is_head]
    state = model.body.state_dict()
    frozen_modules = {name.rsplit(".", 1)[0] for g in groups[:frozen] for name in g.parameter_names}
    checked = 0
    for key, value in state.items():
        if key.rsplit(".", 1)[0] in frozen_modules or frozen == len(groups):
            assert torch.equal(value, initial[key]), f"{strategy}: frozen {key} moved"
            checked += 1
    assert checked >= sum(len(g.parameter_names) for g in groups[:frozen])
    for group in groups[frozen:]:
        moved = [n for n in group.parameter_names if not torch.equal(state[n], initial[n])]
        assert moved, f"{strategy}: trainable group {group.name} did not learn"


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_contract(
    strategy: str,
    family: str,
    weights: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backbone = FAMILIES[family]
    scratch_init = _snapshot_scratch_init(monkeypatch)
    config = _config(strategy)
    recorder = PlanRecorder()
    clf = ImageClassifier(backbone, strategy, config, weights=weights[family], callback=recorder)
    unlabelled = (
        colour_data(per_class=4, seed=2) if get_strategy(strategy).uses_unlabelled else None
    )
    assert clf.fit(colour_data(per_class=6, seed=0), unlabelled=unlabelled) is clf

    # predict
    test = colour_data(per_class=3, seed=1)
    proba = clf.predict_proba(test)
    assert proba.shape == (len(test), len(CLASSES)) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-4)
    assert set(clf.predict(test)) <= set(CLASSES)
    assert 0.0 <= clf.score(test) <= 1.0

    # the plan, as the callback received it before training
    assert len(recorder.plans) == 1 and recorder.plans[0] is clf.plan_
    groups = layer_groups(clf.model_.body)
    frozen = _frozen_count(strategy, groups, config)
    _check_plan(recorder.plans[0], clf.model_, frozen, strategy, config)

    assert head_output_layer(clf.model_.head).in_features == _feature_width(
        clf.model_.body, config.layers
    )

    # frozen means bit-identical
    pretrained = get_strategy(strategy).pretrained
    initial = load_file(str(weights[family])) if pretrained else scratch_init
    assert initial, "no state to compare with"
    _check_frozen(clf.model_, initial, frozen, strategy)

    # save and load: the same predictions
    clf.save(tmp_path / "model")
    loaded = ImageClassifier.load(tmp_path / "model")
    assert loaded.classes_ == CLASSES and loaded.config_ == clf.config_
    saved = clf.model_.state_dict()  # bit-exact: reduced-precision inference can hide a change
    assert all(torch.equal(v, saved[k]) for k, v in loaded.model_.state_dict().items())
    np.testing.assert_array_equal(loaded.predict_proba(test), proba)
    meta = loaded.metadata_
    assert meta["strategy"] == strategy and meta["backbone"] == backbone
    assert meta["class_to_idx"] == {name: i for i, name in enumerate(CLASSES)}
    assert meta["seed"] == SEED and "torch" in meta["versions"]
    assert meta["weights"]["source"] == ("file" if pretrained else "none")

    # export: one ONNX graph (multi-stage features included) that gives the PyTorch
    # model's answers, checked here against an fp32 forward pass of our own
    result = loaded.export(tmp_path / "model.onnx", images=test, calibration=test)
    exported = OnnxClassifier.load(result.path).predict_proba(test)
    transform = loaded.preprocessing_.transform()
    batch = torch.stack([transform(test.image(i)) for i in range(len(test))])
    with torch.inference_mode():
        reference = torch.softmax(loaded.model_.eval()(batch), dim=1).numpy()
    assert np.abs(exported - reference).max() < 1e-4, family
    assert (exported.argmax(1) == reference.argmax(1)).all()
    assert result.parity.max_probability_gap < 1e-4 and result.parity.top1_agreement == 1.0


@pytest.mark.parametrize(
    "backbone", ["test_vit3", "test_coatnet"], ids=["strict-patch-grid-vit", "coatnet"]
)
def test_fixed_input_size_backbone_refuses_another_image_size(backbone: str) -> None:
    """A model built for one resolution says so by name, before any data is touched
    (``test_vit`` above takes 32 px: its patch grid is dynamic)."""
    config = _config("scratch").replace(image_size=48)
    clf = ImageClassifier(backbone, "scratch", config)
    with pytest.raises(BackboneError, match=rf"{backbone}.*image_size=48.*built for 160 px"):
        clf.fit(colour_data(per_class=2))
