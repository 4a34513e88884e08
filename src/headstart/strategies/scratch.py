"""The scratch strategy."""

from __future__ import annotations

from headstart.strategies.base import FitContext, FitResult, Plan, Strategy
from headstart.strategies.common import (
    bn_text,
    new_classifier,
    param_groups,
    plan_rows,
    train_images,
)
from headstart.strategies.registry import register_strategy
from headstart.train.config import TrainConfig
from headstart.train.freezing import (
    layer_groups,
)

__all__ = ["Scratch"]


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

    def unused_settings(self, config: TrainConfig) -> dict[str, str]:
        unused = {
            "freeze_groups": "scratch trains every layer",
            "lp_ft": "scratch has no pre-trained features to probe",
            "probe_l2": "scratch has no linear probe",
        }
        if config.head == "linear":
            unused["head_hidden"] = "only an mlp {head} has a hidden layer"
        return unused

    def fit(self, ctx: FitContext) -> FitResult:
        config = ctx.config
        model = new_classifier(ctx, config.layers)
        groups = layer_groups(model.body)
        _, lrs = param_groups(model, groups, 0, config)
        plan = Plan(
            self.name,
            plan_rows(model, groups, 0, lrs),
            bn_text(config, False),
            ["train everything"],
            ["random initialisation: no pre-trained weights are loaded"],
        )
        ctx.announce(plan)
        history = train_images(ctx, model, groups, 0, "scratch", config.augment)
        return FitResult(model, history, plan)
