"""Feature layers by name: ``"final"`` is the pooled input of the classifier head;
``"stage<i>"`` (or ``"stage-<j>"``, counted from the last) is the global-average-pooled
output of intermediate stage i (timm's ``forward_intermediates``), which can transfer
better to data far from ImageNet. A grid suffix (``"final_2x2"``, ``"stage-1_3x3"``)
averages the layer's map over a g x g grid of regions instead of the whole image,
keeping where things are (a collar from a hem): g * g times the width."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from headstart._internal.validation import LAYER_PATTERN, invalid, split_layer

__all__ = [
    "check_grid_layers",
    "grid_pool",
    "layer_names",
    "parse_layer",
    "pooled_features",
    "stored_layer_name",
]


def parse_layer(layer: str, model: nn.Module) -> int | None:
    """``"final"`` -> None; ``"stage<i>"`` -> i; ``"stage-<j>"`` counts from the last stage
    (``stage-1`` is the last), so one setting suits models with any number of stages. A
    grid suffix (``"_2x2"``) does not change the stage it reads."""
    base, _ = split_layer(layer) if isinstance(layer, str) else (layer, 1)
    if base == "final":
        return None
    stages = len(getattr(model, "feature_info", []) or [])
    match = LAYER_PATTERN.fullmatch(base) if isinstance(base, str) else None
    if match:
        index = int(match.group(1))
        if 0 <= index < stages or (index < 0 and -index <= stages):
            return index % stages
    raise invalid(
        "extract_features",
        "layers",
        f"'final', 'stage0'..'stage{stages - 1}' or 'stage-1'..'stage-{stages}' "
        "(each may end in a grid: '_2x2', '_3x3', '_4x4')",
        layer,
    )


def grid_pool(feature_map: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * grid * grid): the mean of each of grid x grid regions, with
    the bounds adaptive average pooling uses (equal to it), written as slices so that
    the ONNX exporter gets fixed shapes. Channels vary slowest: [c0 r0, c0 r1, ...]."""
    if feature_map.ndim != 4:
        raise invalid(
            "extract_features", "layers", "a grid only on a layer with a (B, C, H, W) map",
            f"a map of shape {tuple(feature_map.shape)}",
        )  # fmt: skip
    if grid == 1:
        return feature_map.float().mean(dim=(2, 3))
    height, width = feature_map.shape[-2:]
    cells = []
    for i in range(grid):
        top, bottom = (i * height) // grid, -(-((i + 1) * height) // grid)
        for j in range(grid):
            left, right = (j * width) // grid, -(-((j + 1) * width) // grid)
            cells.append(feature_map[:, :, top:bottom, left:right].float().mean(dim=(2, 3)))
    return torch.stack(cells, dim=2).flatten(1)


def pooled_features(
    model: nn.Module,
    images: torch.Tensor,
    stages: dict[str, int | None],
    *,
    keep: dict | None = None,
) -> dict:
    """One batch -> {layer: (B, D) pooled features}. ``keep``, if given, receives the maps
    they were pooled from (stage index -> map, ``"final"`` -> the final output): Grad-CAM
    reads the very maps a prediction used."""
    out: dict[str, torch.Tensor] = {}
    wanted = sorted({i for i in stages.values() if i is not None})
    if wanted:
        final, intermediates = model.forward_intermediates(images, indices=wanted)
        by_stage = dict(zip(wanted, intermediates, strict=True))
        for layer, index in stages.items():
            if index is not None:
                out[layer] = grid_pool(by_stage[index], split_layer(layer)[1])
    else:
        final, by_stage = model.forward_features(images), {}
    if keep is not None:
        keep.update(by_stage, final=final)
    for layer, index in stages.items():
        if index is None:
            grid = split_layer(layer)[1]
            if grid == 1:
                out[layer] = model.forward_head(final, pre_logits=True).float()
            else:
                out[layer] = grid_pool(_channels_first(model, final), grid)
    return out


def _channels_first(model: nn.Module, feature_map: torch.Tensor) -> torch.Tensor:
    """The final map as (B, C, H, W): timm's NHWC models (Swin, MambaOut) say so in
    ``output_fmt``; anything not 4-D (a ViT's tokens) is refused by ``grid_pool``."""
    if getattr(model, "output_fmt", "NCHW") == "NHWC" and feature_map.ndim == 4:
        return feature_map.permute(0, 3, 1, 2)
    return feature_map


def check_grid_layers(layers: Sequence[str], model: nn.Module, input_size: Sequence[int]) -> None:
    """A ConfigError naming the layer when a grid asks for regions of a final output that
    has none (a ViT's tokens), found by one pass of a blank image: before any extraction,
    so a ranking fails that one candidate, not every candidate of the model."""
    grids = [layer for layer in layers if split_layer(layer)[1] > 1 and layer.startswith("final")]
    if not grids:
        return
    with torch.inference_mode():
        final = model.eval().forward_features(torch.zeros(1, *input_size))
    if final.ndim != 4:
        raise invalid(
            "extract_features", "layers",
            "a grid only where the model has a feature map: its final output is tokens "
            f"{tuple(final.shape)}; use a stage, e.g. 'stage-1_2x2'",
            grids[0],
        )  # fmt: skip


def stored_layer_name(layer: str, model: nn.Module) -> str:
    """The one spelling of a layer once the model is known: ``stage-1`` of a five-stage
    model is ``stage4`` (``stage-1_2x2``: ``stage4_2x2``). Plans, cache entries and
    listings all print this spelling."""
    index = parse_layer(layer, model)
    _, grid = split_layer(layer)
    base = "final" if index is None else f"stage{index}"
    return base if grid == 1 else f"{base}_{grid}x{grid}"


def layer_names(layers: Sequence[str], model: nn.Module) -> str:
    """Layers as printed: resolved to one spelling each (``stage2, stage3, final``)."""
    return ", ".join(dict.fromkeys(stored_layer_name(layer, model) for layer in layers))
