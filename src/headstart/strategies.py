"""Strategies: each turns (backbone, data, config) into a trained ``Classifier``.

- ``feature-extraction``: the whole base frozen; features computed once (cached
  on disk), the new head trained on them. With augmentation asked for, the
  cache cannot be used: the frozen base then runs every epoch, and we say so.
- ``fine-tune``: the first N layer groups frozen, the rest retrained with small,
  optionally layer-wise decayed learning rates; BatchNorm in frozen groups keeps
  its statistics. By default the head is first fitted on cached features
  (LP-FT): a random head's gradients would otherwise damage the pre-trained
  features in the first steps.
- ``semi-supervised``: feature extraction that also uses unlabelled images:
  labels spread to them over a nearest-neighbour graph of the cached features,
  and the head trains on labelled and newly labelled images alike.
- ``scratch``: the same architecture from random initialisation, all of it
  trained: the baseline that shows what transfer buys.

Every strategy reports its plan (per layer group: trainable or frozen,
parameters, learning rate; the BatchNorm policy) before it trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from headstart._validation import invalid
from headstart.backbones import Backbone
from headstart.classifier import Classifier, HeadSpec, build_head, head_output_layer
from headstart.config import TrainConfig
from headstart.data import ImageDataset, TorchImageDataset
from headstart.engine import Callback, EpochRecord, train_loop
from headstart.errors import ConfigError
from headstart.features import FeatureCache, cached_features
from headstart.freezing import (
    LayerGroup,
    apply_freeze,
    hold_batchnorm,
    layer_groups,
    resolve_frozen_count,
)
from headstart.probe import fit_linear_probe
from headstart.propagate import NEIGHBOURS, label_spreading

__all__ = [
    "STRATEGIES",
    "FitContext",
    "FitResult",
    "Plan",
    "PlanRow",
    "Strategy",
    "get_strategy",
    "register_strategy",
]


@dataclass(frozen=True)
class PlanRow:
    group: str
    parameters: int
    trainable: bool
    lr: float | None  # None for frozen groups, or for a head solved in closed form


@dataclass
class Plan:
    """What a strategy will train, printed before it does."""

    strategy: str
    rows: list[PlanRow]
    bn_policy: str
    stages: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_parameters(self) -> int:
        return sum(r.parameters for r in self.rows if r.trainable)

    @property
    def total_parameters(self) -> int:
        return sum(r.parameters for r in self.rows)

    def format(self) -> str:
        lines = [f"plan: {self.strategy} ({' -> '.join(self.stages)})"]
        lines.append(f"  {'layer group':<28} {'params':>10}  {'state':<9} {'lr':>8}")
        for row in self.rows:
            state = "trainable" if row.trainable else "frozen"
            lr = f"{row.lr:.1e}" if row.lr is not None else "-"
            lines.append(f"  {row.group:<28} {row.parameters:>10,}  {state:<9} {lr:>8}")
        share = self.trainable_parameters / max(self.total_parameters, 1)
        lines.append(
            f"  trainable: {self.trainable_parameters:,} of {self.total_parameters:,} "
            f"parameters ({share:.1%})"
        )
        lines.append(f"  BatchNorm: {self.bn_policy}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "rows": [r.__dict__ for r in self.rows],
            "bn_policy": self.bn_policy,
            "stages": self.stages,
            "notes": self.notes,
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
        }


@dataclass
class FitContext:
    backbone: Backbone  # its model has no classifier head (reset to 0 classes)
    train: ImageDataset
    validation: ImageDataset | None
    config: TrainConfig
    device: torch.device
    cache: FeatureCache | None
    checkpoint_dir: Path | None
    resume: bool
    callback: Callback
    run_key: str | None = None  # identifies config + backbone + weights + data for --resume
    unlabelled: ImageDataset | None = None  # images without labels (semi-supervised)

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    def checkpoint(self, stage: str) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / f"checkpoint-{stage}.pt"


@dataclass
class FitResult:
    model: Classifier
    history: list[EpochRecord]
    plan: Plan


class Strategy:
    """Base class: a name, defaults, and ``fit``."""

    name: str = ""
    summary: str = ""
    pretrained: bool = True  # scratch builds the backbone without weights
    uses_unlabelled: bool = False  # semi-supervised needs unlabelled images; others refuse them

    def default_config(self) -> TrainConfig:
        return TrainConfig()

    def fit(self, ctx: FitContext) -> FitResult:  # pragma: no cover - abstract
        raise NotImplementedError


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES[cls.name] = cls()
    return cls


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise invalid("ImageClassifier", "strategy", f"one of {sorted(STRATEGIES)}", name)
    return STRATEGIES[name]


# ---------------------------------------------------------------- shared pieces


def _head_spec(ctx: FitContext, in_features: int) -> HeadSpec:
    c = ctx.config
    return HeadSpec(c.head, in_features, ctx.num_classes, c.head_hidden, c.dropout)


def _class_weights(ctx: FitContext) -> torch.Tensor | None:
    if ctx.config.class_weights != "balanced":
        return None
    counts = np.bincount(ctx.train.labels, minlength=ctx.num_classes).astype(np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.as_tensor(weights, dtype=torch.float32)


def _new_classifier(ctx: FitContext, layers: tuple[str, ...]) -> Classifier:
    torch.manual_seed(ctx.config.seed)
    body = ctx.backbone.model
    probe = Classifier(body, layers, nn.Identity())
    with torch.inference_mode():
        size = ctx.backbone.preprocessing.input_size
        body.eval()
        width = probe.features(torch.zeros(2, *size)).shape[1]
    return Classifier(body, layers, build_head(_head_spec(ctx, width)))


def _split_decay(params: list[tuple[str, nn.Parameter]], lr: float, wd: float, name: str) -> list:
    """Two optimizer groups: weights with decay, norms and biases without."""
    decay = [p for n, p in params if p.ndim > 1]
    no_decay = [p for n, p in params if p.ndim <= 1]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": wd, "name": name})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": name})
    return groups


def _param_groups(
    model: Classifier, groups: list[LayerGroup], frozen_count: int, config: TrainConfig
) -> tuple[list[dict], dict[str, float]]:
    """Optimizer groups (layer-wise decayed base LR, head LR) and the LR of each layer group."""
    named = dict(model.body.named_parameters())
    body = [g for g in groups if not g.is_head]
    trainable = body[frozen_count:]
    optimizer_groups, lrs = [], {}
    for distance, group in enumerate(reversed(trainable)):
        lr = config.base_lr * config.layer_decay**distance
        lrs[group.name] = lr
        params = [(n, named[n]) for n in group.parameter_names]
        optimizer_groups += _split_decay(params, lr, config.weight_decay, group.name)
    head_params = list(model.head.named_parameters())
    optimizer_groups += _split_decay(head_params, config.head_lr, config.weight_decay, "head")
    lrs["head"] = config.head_lr
    return optimizer_groups, lrs


def _plan_rows(
    model: Classifier, groups: list[LayerGroup], frozen_count: int, lrs: dict[str, float]
) -> list[PlanRow]:
    body = [g for g in groups if not g.is_head]
    rows = [
        PlanRow(g.name, g.num_parameters, i >= frozen_count, lrs.get(g.name))
        for i, g in enumerate(body)
    ]
    head_size = sum(p.numel() for p in model.head.parameters())
    rows.append(PlanRow("head (new)", head_size, True, lrs.get("head")))
    return rows


def _image_sets(
    ctx: FitContext, augment: bool
) -> tuple[TorchImageDataset, TorchImageDataset | None]:
    prep = ctx.backbone.preprocessing
    train = TorchImageDataset(ctx.train, prep.transform(training=augment))
    val = None
    if ctx.validation is not None and len(ctx.validation):
        val = TorchImageDataset(ctx.validation, prep.transform(training=False))
    return train, val


def _features(ctx: FitContext, dataset: ImageDataset, label: str) -> np.ndarray:
    layers = ctx.config.layers
    found, was_cached = cached_features(
        ctx.backbone,
        dataset,
        ctx.cache,
        layers=layers,
        fast=ctx.config.fast,
        device=ctx.device,
        batch_size=max(ctx.config.batch_size, 64),
        progress=lambda done, total: ctx.callback.on_progress(f"features {label}", done, total),
        notice=lambda text: ctx.callback.on_stage("feature cache", text),
    )
    if was_cached:
        ctx.callback.on_stage("features", f"{label}: {len(dataset)} images from the cache")
    return np.concatenate([found[layer] for layer in layers], axis=1)


def _fit_head_on_features(
    ctx: FitContext, model: Classifier, extra: tuple[np.ndarray, np.ndarray] | None = None
) -> list[EpochRecord]:
    """Train ``model.head`` on cached features: L-BFGS for linear, the loop for an MLP.

    ``extra``: more (features, labels) rows to train on, e.g. spread labels.
    """
    config = ctx.config
    x_train = _features(ctx, ctx.train, "train")
    y_train = ctx.train.labels
    if extra is not None:
        x_train = np.concatenate([x_train, extra[0]])
        y_train = np.concatenate([y_train, extra[1]])
    if config.head == "linear":
        ctx.callback.on_stage("linear probe", f"L-BFGS on {x_train.shape} cached features")
        weights = _class_weights(ctx)
        probe = fit_linear_probe(
            x_train,
            y_train,
            ctx.num_classes,
            l2=config.probe_l2,
            class_weights=None if weights is None else weights.numpy(),
            seed=config.seed,
        )
        with torch.no_grad():
            target = head_output_layer(model.head)
            target.weight.copy_(probe.head.weight)
            target.bias.copy_(probe.head.bias)
        return []
    ctx.callback.on_stage("mlp head", f"trained on {x_train.shape} cached features")
    # Train on standardised features, then fold the scaling into the first layer,
    # so the deployed head takes raw features exactly like the linear probe does.
    mean = x_train.mean(0)
    std = np.maximum(x_train.std(0), 1e-6)
    labels = torch.from_numpy(y_train)
    train_set = TensorDataset(torch.from_numpy((x_train - mean) / std), labels)
    val_set = None
    if ctx.validation is not None and len(ctx.validation):
        x_val = (_features(ctx, ctx.validation, "validation") - mean) / std
        val_set = TensorDataset(torch.from_numpy(x_val), torch.from_numpy(ctx.validation.labels))
    groups = _split_decay(
        list(model.head.named_parameters()), config.head_lr, config.weight_decay, "head"
    )
    outcome = train_loop(
        model.head,
        train_set,
        val_set,
        param_groups=groups,
        config=config.replace(fast=False),
        stage="head",
        epochs=max(config.epochs, 30),
        class_weights=_class_weights(ctx),
        checkpoint=ctx.checkpoint("head"),
        resume=ctx.resume,
        callback=ctx.callback,
        run_key=ctx.run_key,
        device=ctx.device,
    )
    first = next(m for m in model.head.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        scale = torch.from_numpy(1.0 / std).float()
        shift = torch.from_numpy(mean / std).float()
        first.bias.sub_((first.weight * shift).sum(1))
        first.weight.mul_(scale)
    return outcome.history


def _train_images(
    ctx: FitContext,
    model: Classifier,
    groups: list[LayerGroup],
    frozen_count: int,
    stage: str,
    augment: bool,
    config: TrainConfig | None = None,
) -> list[EpochRecord]:
    config = config or ctx.config
    apply_freeze(model.body, groups, frozen_count)
    for p in model.head.parameters():
        p.requires_grad_(True)
    optimizer_groups, _ = _param_groups(model, groups, frozen_count, config)

    def hold() -> None:
        hold_batchnorm(model.body, groups, frozen_count, config.bn_policy)

    train_set, val_set = _image_sets(ctx, augment)
    outcome = train_loop(
        model,
        train_set,
        val_set,
        param_groups=optimizer_groups,
        config=config,
        stage=stage,
        class_weights=_class_weights(ctx),
        after_train_mode=hold,
        checkpoint=ctx.checkpoint(stage),
        resume=ctx.resume,
        callback=ctx.callback,
        run_key=ctx.run_key,
        device=ctx.device,
    )
    return outcome.history


def _bn_text(config: TrainConfig, any_frozen: bool) -> str:
    if config.bn_policy == "eval":
        return (
            "eval mode everywhere: running statistics never move; trainable groups "
            "still learn their scale and shift"
        )
    if any_frozen:
        return "frozen groups keep their running statistics (eval mode); trainable groups update"
    return "every BatchNorm layer updates its running statistics"


# ------------------------------------------------------------------ strategies


@register_strategy
class FeatureExtraction(Strategy):
    name = "feature-extraction"
    summary = "freeze the whole base; train a new head on features computed once"

    def default_config(self) -> TrainConfig:
        # The last three stages feed the head beside the final features: on images far
        # from ImageNet (Fashion-MNIST, lite0: stages 2-4, 1,752 features instead of
        # 1,280) that added 1.1 and 1.4 points to a probe at 10 and 100 labels per class
        # (docs/BENCHMARKS.md).
        return TrainConfig(
            epochs=30,
            head_lr=1e-3,
            patience=5,
            validation_fraction=0.0,
            layers=("stage-3", "stage-2", "stage-1", "final"),
        )

    def fit(self, ctx: FitContext) -> FitResult:
        config = ctx.config
        model = _new_classifier(ctx, config.layers)
        groups = layer_groups(model.body)
        body_count = sum(1 for g in groups if not g.is_head)
        use_cache = not config.augment
        if use_cache:
            head_lr = None if config.head == "linear" else config.head_lr
            stages = ["features (cached)", "linear probe" if config.head == "linear" else "mlp"]
        else:
            head_lr = config.head_lr
            stages = ["frozen base every epoch", "head"]
        rows = _plan_rows(model, groups, body_count, {"head": head_lr} if head_lr else {})
        notes = [f"features: {', '.join(config.layers)}"]
        if use_cache and config.head == "linear":
            notes.append("linear head solved by L-BFGS to convergence: head_lr and epochs unused")
        if use_cache and config.head == "mlp" and config.epochs < 30:
            notes.append(f"MLP head: at least 30 epochs on cached features (asked {config.epochs})")
        if not use_cache:
            notes.append(
                "augmentation is on: each epoch sees new crops, so features cannot be cached; "
                "the frozen base runs on every image every epoch (slower)"
            )
        plan = Plan(
            self.name, rows, _bn_text(config.replace(bn_policy="eval"), True), stages, notes
        )
        ctx.callback.on_plan(plan)
        if use_cache:
            history = _fit_head_on_features(ctx, model)
        else:
            history = _train_images(ctx, model, groups, body_count, "head", augment=True)
        return FitResult(model, history, plan)


@register_strategy
class SemiSupervised(FeatureExtraction):
    name = "semi-supervised"
    summary = (
        "feature extraction that also learns from unlabelled images: labels spread to "
        "them through nearest neighbours in feature space"
    )
    uses_unlabelled = True

    def fit(self, ctx: FitContext) -> FitResult:
        config = ctx.config
        if config.augment:
            raise ConfigError(
                "semi-supervised: augment=True is not supported; labels are spread over "
                "features computed once, so set augment=False"
            )
        unlabelled = ctx.unlabelled
        if unlabelled is None or len(unlabelled) == 0:
            raise ConfigError("semi-supervised: needs unlabelled images (none were given)")
        model = _new_classifier(ctx, config.layers)
        groups = layer_groups(model.body)
        body_count = sum(1 for g in groups if not g.is_head)
        head = "linear probe" if config.head == "linear" else "mlp"
        stages = ["features (cached)", "label spreading", head]
        head_lr = None if config.head == "linear" else config.head_lr
        rows = _plan_rows(model, groups, body_count, {"head": head_lr} if head_lr else {})
        notes = [
            f"features: {', '.join(config.layers)}",
            f"{len(ctx.train)} labelled and {len(unlabelled)} unlabelled images; labels spread "
            f"over a {NEIGHBOURS}-nearest-neighbour graph, then the head trains on both",
        ]
        fewest = int(np.bincount(ctx.train.labels, minlength=ctx.num_classes).min())
        if fewest >= 50:
            notes.append(
                f"{fewest}+ labels per class: spreading paid off only with few labels when "
                "measured (Fashion-MNIST: +5 points at 10 per class, -0.4 at 100, -3.1 at "
                "1000); compare it with feature-extraction"
            )
        bn = _bn_text(config.replace(bn_policy="eval"), True)
        plan = Plan(self.name, rows, bn, stages, notes)
        ctx.callback.on_plan(plan)
        x_labelled = _features(ctx, ctx.train, "train")
        x_unlabelled = _features(ctx, unlabelled, "unlabelled")
        spread = label_spreading(
            x_labelled, ctx.train.labels, x_unlabelled, ctx.num_classes, seed=config.seed
        )
        reached = spread.reached
        counts = np.bincount(spread.labels[reached], minlength=ctx.num_classes)
        ctx.callback.on_stage(
            "label spreading",
            f"{int(reached.sum())} of {len(unlabelled)} unlabelled images labelled; per class "
            + ", ".join(f"{name} {n}" for name, n in zip(ctx.train.classes, counts, strict=True)),
        )
        extra = (x_unlabelled[reached], spread.labels[reached])
        history = _fit_head_on_features(ctx, model, extra)
        return FitResult(model, history, plan)


@register_strategy
class FineTune(Strategy):
    name = "fine-tune"
    summary = "freeze the earliest layer groups; retrain the rest and a new head"

    def default_config(self) -> TrainConfig:
        # Measured on Fashion-MNIST, 1000 labels per class (docs/BENCHMARKS.md): with
        # mild augmentation, every group but the stem and the first block trainable and
        # base_lr 5e-4, 8 epochs reached 91.3 %; without augmentation, with the top four
        # groups at 2e-4, 6 epochs reached 90.6 %.
        return TrainConfig(
            epochs=8,
            head_lr=1e-3,
            base_lr=5e-4,
            layer_decay=0.8,
            freeze_groups=2,
            weight_decay=0.01,
            warmup_epochs=0.5,
            patience=3,
            augment=True,
        )

    def fit(self, ctx: FitContext) -> FitResult:
        config = ctx.config
        model = _new_classifier(ctx, config.layers)
        groups = layer_groups(model.body)
        frozen_count = resolve_frozen_count(groups, config.freeze_groups)
        # In LP-FT the head starts good: it moves at the base rate, not the probe rate.
        ft_config = config.replace(head_lr=config.base_lr * 5) if config.lp_ft else config
        _, lrs = _param_groups(model, groups, frozen_count, ft_config)
        stages = (["linear probe (cached features)"] if config.lp_ft else []) + ["fine-tune"]
        notes = []
        if config.lp_ft:
            notes.append(
                "LP-FT: the head is fitted on cached features first, so its first "
                "gradients do not disturb the pre-trained layers; while fine-tuning it then "
                f"moves at 5 x base_lr = {ft_config.head_lr:.1e} (not head_lr)"
            )
        if config.layer_decay < 1:
            notes.append(f"layer-wise LR decay {config.layer_decay} per group below the top")
        plan = Plan(
            self.name,
            _plan_rows(model, groups, frozen_count, lrs),
            _bn_text(config, frozen_count > 0),
            stages,
            notes,
        )
        ctx.callback.on_plan(plan)
        history: list[EpochRecord] = []
        if config.lp_ft:
            history += _fit_head_on_features(ctx, model)
        ctx.callback.on_stage("fine-tune", f"{plan.trainable_parameters:,} trainable parameters")
        history += _train_images(
            ctx, model, groups, frozen_count, "fine-tune", config.augment, ft_config
        )
        return FitResult(model, history, plan)


@register_strategy
class Scratch(Strategy):
    name = "scratch"
    summary = "the same architecture from random initialisation (the baseline)"
    pretrained = False

    def default_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=30,
            head_lr=2e-3,
            base_lr=2e-3,
            weight_decay=0.05,
            warmup_epochs=1.0,
            augment=True,
            freeze_groups=0,
            bn_policy="train",
            lp_ft=False,
            patience=6,
        )

    def fit(self, ctx: FitContext) -> FitResult:
        config = ctx.config
        model = _new_classifier(ctx, config.layers)
        groups = layer_groups(model.body)
        _, lrs = _param_groups(model, groups, 0, config)
        plan = Plan(
            self.name,
            _plan_rows(model, groups, 0, lrs),
            _bn_text(config, False),
            ["train everything"],
            ["random initialisation: no pre-trained weights are loaded"],
        )
        ctx.callback.on_plan(plan)
        history = _train_images(ctx, model, groups, 0, "scratch", config.augment)
        return FitResult(model, history, plan)
