"""The feature-extraction strategy."""

from __future__ import annotations

from headstart.features.layers import layer_names
from headstart.strategies.base import FitContext, FitResult, Plan, Strategy
from headstart.strategies.common import (
    NEW_HEAD,
    bn_text,
    fit_head_on_features,
    new_classifier,
    plan_rows,
    train_images,
)
from headstart.strategies.registry import register_strategy
from headstart.train.config import TrainConfig
from headstart.train.freezing import (
    layer_groups,
)

__all__ = ["FeatureExtraction"]


@register_strategy
class FeatureExtraction(Strategy):
    name = "feature-extraction"
    frozen_body = True
    summary = "freeze the whole base; train a new head on features computed once"

    def default_config(self) -> TrainConfig:
        # The last three stages feed the head beside the final features: on images far
        # from ImageNet (Fashion-MNIST) they made a better probe than the final features
        # alone, at 10 and at 100 labels per class (docs/BENCHMARKS.md, section 3).
        return TrainConfig(
            epochs=30,
            head_lr=1e-3,
            patience=5,
            validation_fraction=0.0,
            layers=("stage-3", "stage-2", "stage-1", "final"),
        )

    def unused_settings(self, config: TrainConfig) -> dict[str, str]:
        frozen = "the whole base stays frozen"
        unused = dict.fromkeys(("base_lr", "layer_decay", "freeze_groups", "bn_policy"), frozen)
        unused["lp_ft"] = "LP-FT is a fine-tune setting; here the head is all that trains"
        if config.head == "linear":
            unused["head_hidden"] = "only an mlp {head} has a hidden layer"
        if config.augment or config.head != "linear":
            unused["probe_l2"] = "the head trains by gradient steps, not the L-BFGS probe"
        else:
            probe = "the linear head is solved by L-BFGS on cached features, to convergence"
            loop = ("epochs", "head_lr", "weight_decay", "warmup_epochs", "schedule")
            more = ("label_smoothing", "patience", "validation_fraction", "dropout")
            unused.update(dict.fromkeys(loop + more, probe))
        return unused

    def fit(self, ctx: FitContext) -> FitResult:
        config = ctx.config
        model = new_classifier(ctx, config.layers)
        groups = layer_groups(model.body)
        body_count = sum(1 for g in groups if not g.is_head)
        use_cache = not config.augment
        if use_cache:
            head_lr = None if config.head == "linear" else config.head_lr
            stages = ["features (cached)", "linear probe" if config.head == "linear" else "mlp"]
        else:
            head_lr = config.head_lr
            stages = ["frozen base every epoch", "head"]
        rows = plan_rows(model, groups, body_count, {NEW_HEAD: head_lr} if head_lr else {})
        notes = [f"features: {layer_names(config.layers, model.body)}"]
        if use_cache and config.head == "linear":
            notes.append("linear head solved by L-BFGS to convergence ({head_lr}, {epochs} unused)")
        if use_cache and config.head == "mlp" and config.epochs < 30:
            notes.append(f"MLP head: at least 30 epochs on cached features (asked {config.epochs})")
        if not use_cache:
            notes.append(
                "augmentation is on: each epoch sees new crops, so features cannot be cached; "
                "the frozen base runs on every image every epoch (slower)"
            )
        plan = Plan(self.name, rows, bn_text(config.replace(bn_policy="eval"), True), stages, notes)
        ctx.announce(plan)
        if use_cache:
            history = fit_head_on_features(ctx, model)
        else:
            history = train_images(ctx, model, groups, body_count, "head", augment=True)
        return FitResult(model, history, plan)
