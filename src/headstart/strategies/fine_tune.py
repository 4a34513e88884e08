"""The fine-tune strategy."""

from __future__ import annotations

from headstart.strategies.base import FitContext, FitResult, Plan, Strategy
from headstart.strategies.common import (
    bn_text,
    fit_head_on_features,
    new_classifier,
    param_groups,
    plan_rows,
    train_images,
)
from headstart.strategies.registry import register_strategy
from headstart.train.callbacks import EpochRecord
from headstart.train.config import TrainConfig
from headstart.train.freezing import (
    layer_groups,
    resolve_frozen_count,
)

__all__ = ["FineTune"]


@register_strategy
class FineTune(Strategy):
    name = "fine-tune"
    summary = "freeze the earliest layer groups; retrain the rest and a new head"

    def default_config(self) -> TrainConfig:
        # Mild augmentation, every group but the stem and the first block trainable,
        # base_lr 5e-4 for 8 epochs: chosen on Fashion-MNIST over the earlier default
        # (no augmentation, the top four groups at 2e-4, 6 epochs), which it beat at 100
        # and 1000 labels per class (docs/BENCHMARKS.md, section 3).
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

    def unused_settings(self, config: TrainConfig) -> dict[str, str]:
        unused = {}
        if config.lp_ft and config.head == "linear":
            unused["head_lr"] = (
                "with {lp_ft} the head is fitted by the L-BFGS probe, then moves at 5 x {base_lr}"
            )
        if not (config.lp_ft and config.head == "linear"):
            unused["probe_l2"] = "only the LP-FT probe of a linear {head} uses it"
        if config.head == "linear":
            unused["head_hidden"] = "only an mlp {head} has a hidden layer"
        return unused

    def fit(self, ctx: FitContext) -> FitResult:
        config = ctx.config
        model = new_classifier(ctx, config.layers)
        groups = layer_groups(model.body)
        frozen_count = resolve_frozen_count(groups, config.freeze_groups)
        # In LP-FT the head starts good: it moves at the base rate, not the probe rate.
        ft_config = config.replace(head_lr=config.base_lr * 5) if config.lp_ft else config
        _, lrs = param_groups(model, groups, frozen_count, ft_config)
        stages = (["linear probe (cached features)"] if config.lp_ft else []) + ["fine-tune"]
        notes = []
        if config.lp_ft:
            notes.append(
                "LP-FT: the head is fitted on cached features first, so its first "
                "gradients do not disturb the pre-trained layers; while fine-tuning it then "
                f"moves at 5 x {{base_lr}} = {ft_config.head_lr:.1e} (not {{head_lr}})"
            )
        if config.layer_decay < 1:
            notes.append(f"layer-wise LR decay {config.layer_decay} per group below the top")
        plan = Plan(
            self.name,
            plan_rows(model, groups, frozen_count, lrs),
            bn_text(config, frozen_count > 0),
            stages,
            notes,
        )
        ctx.announce(plan)
        history: list[EpochRecord] = []
        if config.lp_ft:
            history += fit_head_on_features(ctx, model)
        ctx.callback.on_stage("fine-tune", f"{plan.trainable_parameters:,} trainable parameters")
        history += train_images(
            ctx, model, groups, frozen_count, "fine-tune", config.augment, ft_config
        )
        return FitResult(model, history, plan)
