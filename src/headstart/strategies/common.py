"""Pieces every strategy shares: building the classifier, optimizer groups with
layer-wise learning rates, the plan rows, cached features, and the two ways to train
(a head on cached features; the network on images)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from headstart.data.dataset import ImageDataset, TorchImageDataset
from headstart.features.cache import cached_features
from headstart.strategies.base import FitContext, PlanRow
from headstart.train.callbacks import EpochRecord
from headstart.train.config import TrainConfig
from headstart.train.freezing import (
    LayerGroup,
    apply_freeze,
    hold_batchnorm,
)
from headstart.train.loop import train_loop
from headstart.train.network import Classifier, HeadSpec, build_head, head_output_layer
from headstart.train.probe import fit_linear_probe
from headstart.train.weighting import PROBE_PRIOR_SHIFT, balanced_weights, class_weighting

# The plan's row for the new head, and its key among the learning rates by group name:
# a key no timm group is called (ConvNeXt's body has a group under "head").
NEW_HEAD = "head (new)"


def head_spec(ctx: FitContext, in_features: int) -> HeadSpec:
    c = ctx.config
    return HeadSpec(c.head, in_features, ctx.num_classes, c.head_hidden, c.dropout)


def class_weights(ctx: FitContext) -> torch.Tensor | None:
    weights = loss_weights(ctx.train.labels, ctx.num_classes, ctx.config)
    return None if weights is None else torch.from_numpy(weights)


def loss_weights(labels: np.ndarray, num_classes: int, config: TrainConfig) -> np.ndarray | None:
    """Per-class loss weights where ``class_weights`` is (or, for "auto", comes to)
    "balanced" on these labels: inverse frequency, mean 1 over the classes, float32;
    None for an unweighted loss."""
    if class_weighting(labels, num_classes, config.class_weights).used != "balanced":
        return None
    return balanced_weights(labels, num_classes)


def new_classifier(ctx: FitContext, layers: tuple[str, ...]) -> Classifier:
    torch.manual_seed(ctx.config.seed)
    body = ctx.backbone.model
    probe = Classifier(body, layers, nn.Identity())
    with torch.inference_mode():
        size = ctx.backbone.preprocessing.input_size
        body.eval()
        width = probe.features(torch.zeros(2, *size)).shape[1]
    return Classifier(body, layers, build_head(head_spec(ctx, width)))


def split_decay(params: list[tuple[str, nn.Parameter]], lr: float, wd: float, name: str) -> list:
    """Two optimizer groups: weights with decay, norms and biases without."""
    decay = [p for n, p in params if p.ndim > 1]
    no_decay = [p for n, p in params if p.ndim <= 1]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": wd, "name": name})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": name})
    return groups


def param_groups(
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
        optimizer_groups += split_decay(params, lr, config.weight_decay, group.name)
    head_params = list(model.head.named_parameters())
    optimizer_groups += split_decay(head_params, config.head_lr, config.weight_decay, "head")
    lrs[NEW_HEAD] = config.head_lr
    return optimizer_groups, lrs


def plan_rows(
    model: Classifier, groups: list[LayerGroup], frozen_count: int, lrs: dict[str, float]
) -> list[PlanRow]:
    body = [g for g in groups if not g.is_head]
    rows = [
        PlanRow(g.name, g.num_parameters, i >= frozen_count, lrs.get(g.name))
        for i, g in enumerate(body)
    ]
    head_size = sum(p.numel() for p in model.head.parameters())
    rows.append(PlanRow(NEW_HEAD, head_size, True, lrs.get(NEW_HEAD)))
    return rows


def image_sets(
    ctx: FitContext, augment: bool
) -> tuple[TorchImageDataset, TorchImageDataset | None]:
    prep = ctx.backbone.preprocessing
    train = TorchImageDataset(ctx.train, prep.transform(training=augment))
    val = None
    if ctx.validation is not None and len(ctx.validation):
        val = TorchImageDataset(ctx.validation, prep.transform(training=False))
    return train, val


def features(ctx: FitContext, dataset: ImageDataset, label: str) -> np.ndarray:
    layers = ctx.config.layers
    if ctx.cache is not None:  # the cache computes an image once: say so, or counts differ
        said = repeats_note(dataset)
        if said is not None:
            ctx.callback.on_stage("features", f"{label}: {said}")
    found, use = cached_features(
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
    if use.from_cache:
        extracted = f", {use.extracted:,} extracted" if use.extracted else ""
        ctx.callback.on_stage(
            "features", f"{label}: {use.from_cache:,} images from the cache{extracted}"
        )
    return np.concatenate([found[layer] for layer in layers], axis=1)


def repeats_note(dataset: ImageDataset) -> str | None:
    """How many of ``dataset``'s images the feature cache computes (one per distinct
    file), so that its progress count adds up to the images; None without repeats."""
    distinct = len(set(dataset.content_hashes()))
    if distinct == len(dataset):
        return None
    return (
        f"{len(dataset):,} images, {distinct:,} distinct "
        f"({len(dataset) - distinct:,} repeated files share their features)"
    )


def fit_head_on_features(
    ctx: FitContext, model: Classifier, extra: tuple[np.ndarray, np.ndarray] | None = None
) -> list[EpochRecord]:
    """Train ``model.head`` on cached features: L-BFGS for linear, the loop for an MLP.

    ``extra``: more (features, labels) rows to train on, e.g. spread labels.
    """
    config = ctx.config
    x_train = features(ctx, ctx.train, "train")
    y_train = ctx.train.labels
    if extra is not None:
        x_train = np.concatenate([x_train, extra[0]])
        y_train = np.concatenate([y_train, extra[1]])
    if config.head == "linear":
        ctx.callback.on_stage("linear probe", f"L-BFGS on {x_train.shape} cached features")
        weights = class_weights(ctx)
        probe = fit_linear_probe(
            x_train,
            y_train,
            ctx.num_classes,
            l2=config.probe_l2,
            class_weights=None if weights is None else weights.numpy(),
            prior_shift=0.0 if weights is None else PROBE_PRIOR_SHIFT,
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
    scale = standardising_scale(x_train.std(0))
    labels = torch.from_numpy(y_train)
    train_set = TensorDataset(torch.from_numpy((x_train - mean) * scale), labels)
    val_set = None
    if ctx.validation is not None and len(ctx.validation):
        x_val = (features(ctx, ctx.validation, "validation") - mean) * scale
        val_set = TensorDataset(torch.from_numpy(x_val), torch.from_numpy(ctx.validation.labels))
    groups = split_decay(
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
        class_weights=class_weights(ctx),
        checkpoint=ctx.checkpoint("head"),
        resume=ctx.resume,
        callback=ctx.callback,
        run_key=ctx.run_key,
        device=ctx.device,
    )
    first = next(m for m in model.head.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        shift = torch.from_numpy(mean * scale).float()
        first.bias.sub_((first.weight * shift).sum(1))
        first.weight.mul_(torch.from_numpy(scale).float())
    return outcome.history


def standardising_scale(std: np.ndarray) -> np.ndarray:
    """1/std per feature, and 0 for features (nearly) constant on the training images.

    Such a feature carries nothing to learn, and 1/std of a tiny spread, folded into the
    head's first layer, gives it huge weights: the bf16 noise of prediction, or
    fine-tuning's first drift of the features, then blows the logits up. Zeroed, the
    head ignores them."""
    std = np.asarray(std, dtype=np.float64)
    floor = max(1e-3 * float(np.median(std)), 1e-12)
    safe = np.maximum(std, floor)
    return np.where(std > floor, 1.0 / safe, 0.0).astype(np.float32)


def train_images(
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
    optimizer_groups, _ = param_groups(model, groups, frozen_count, config)

    def hold() -> None:
        hold_batchnorm(model.body, groups, frozen_count, config.bn_policy)

    train_set, val_set = image_sets(ctx, augment)
    outcome = train_loop(
        model,
        train_set,
        val_set,
        param_groups=optimizer_groups,
        config=config,
        stage=stage,
        class_weights=class_weights(ctx),
        after_train_mode=hold,
        checkpoint=ctx.checkpoint(stage),
        resume=ctx.resume,
        callback=ctx.callback,
        run_key=ctx.run_key,
        device=ctx.device,
    )
    return outcome.history


def bn_text(config: TrainConfig, any_frozen: bool) -> str:
    if config.bn_policy == "eval":
        return (
            "eval mode everywhere: running statistics never move; trainable groups "
            "still learn their scale and shift"
        )
    if any_frozen:
        return "frozen groups keep their running statistics (eval mode); trainable groups update"
    return "every BatchNorm layer updates its running statistics"
