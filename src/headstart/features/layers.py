"""Feature layers by name: ``"final"`` is the pooled input of the classifier head;
``"stage<i>"`` (or ``"stage-<j>"``, counted from the last) is the global-average-pooled
output of intermediate stage i (timm's ``forward_intermediates``), which can transfer
better to data far from ImageNet."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from headstart._internal.validation import LAYER_PATTERN, invalid

__all__ = ["layer_names", "parse_layer", "pooled_features", "stored_layer_name"]


def parse_layer(layer: str, model: nn.Module) -> int | None:
    """``"final"`` -> None; ``"stage<i>"`` -> i; ``"stage-<j>"`` counts from the last stage
    (``stage-1`` is the last), so one setting suits models with any number of stages."""
    if layer == "final":
        return None
    stages = len(getattr(model, "feature_info", []) or [])
    match = LAYER_PATTERN.fullmatch(layer) if isinstance(layer, str) else None
    if match:
        index = int(match.group(1))
        if 0 <= index < stages or (index < 0 and -index <= stages):
            return index % stages
    raise invalid(
        "extract_features",
        "layers",
        f"'final', 'stage0'..'stage{stages - 1}' or 'stage-1'..'stage-{stages}'",
        layer,
    )


def pooled_features(model: nn.Module, images: torch.Tensor, stages: dict[str, int | None]) -> dict:
    """One batch -> {layer: (B, D) pooled features}."""
    out: dict[str, torch.Tensor] = {}
    wanted = sorted({i for i in stages.values() if i is not None})
    if wanted:
        final, intermediates = model.forward_intermediates(images, indices=wanted)
        by_stage = dict(zip(wanted, intermediates, strict=True))
        for layer, index in stages.items():
            if index is not None:
                out[layer] = by_stage[index].float().mean(dim=(2, 3))
    else:
        final = model.forward_features(images)
    if "final" in stages:
        out["final"] = model.forward_head(final, pre_logits=True).float()
    return out


def stored_layer_name(layer: str, model: nn.Module) -> str:
    """The one spelling of a layer once the model is known: ``stage-1`` of a five-stage
    model is ``stage4``. Plans, cache entries and listings all print this spelling."""
    index = parse_layer(layer, model)
    return "final" if index is None else f"stage{index}"


def layer_names(layers: Sequence[str], model: nn.Module) -> str:
    """Layers as printed: resolved to one spelling each (``stage2, stage3, final``)."""
    return ", ".join(dict.fromkeys(stored_layer_name(layer, model) for layer in layers))
