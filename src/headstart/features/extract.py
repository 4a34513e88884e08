"""Frozen-backbone features: every image through the base once, batched, on the fast path."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from headstart._internal.validation import check_int, invalid
from headstart.backbones.device import select_device
from headstart.backbones.registry import Backbone
from headstart.data.dataset import ImageDataset, TorchImageDataset
from headstart.features.fastpath import (
    fast_path_available,
    inference_model,
    inference_transforms,
    micro_batches,
    numerics,
)
from headstart.features.layers import parse_layer, pooled_features
from headstart.parallel import gather_to_all, world

__all__ = ["Progress", "extract_features", "extract_shared"]

Progress = Callable[[int, int], None]  # (images done, images in all)


def extract_features(
    backbone: Backbone,
    dataset: ImageDataset,
    *,
    layers: Sequence[str] = ("final",),
    batch_size: int = 64,
    device: str | torch.device = "auto",
    fast: bool = True,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Run the frozen backbone over every image once: {layer: float32 array (N, D)}."""
    check_int("extract_features", "batch_size", batch_size)
    if not layers:
        raise invalid("extract_features", "layers", "a non-empty list", layers)
    device = select_device(device) if isinstance(device, str) else device
    model = backbone.model.to(device).eval()
    stages = {layer: parse_layer(layer, model) for layer in layers}
    model = inference_model(model, device, fast, backbone.preprocessing.input_size, stages)
    transform, collate = inference_transforms(backbone.preprocessing, fast)
    fast_path = fast and fast_path_available(device)
    layout = torch.channels_last if fast_path else torch.contiguous_format
    loader = DataLoader(
        TorchImageDataset(dataset, transform), batch_size, shuffle=False, collate_fn=collate
    )
    chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    done = 0
    try:
        with torch.inference_mode(), numerics(model, device, fast):
            for images, _ in loader:
                images = images.to(device).contiguous(memory_format=layout)
                for part in micro_batches(images, device, fast):
                    for layer, values in pooled_features(model, part, stages).items():
                        chunks[layer].append(values.cpu().numpy())
                done += len(images)
                if progress is not None:
                    progress(done, len(dataset))
    finally:  # the caller's model goes back as it came, also after a bad image
        backbone.model.to(memory_format=torch.contiguous_format)
    return {layer: np.concatenate(parts).astype(np.float32) for layer, parts in chunks.items()}


def extract_shared(
    extract: Callable[[ImageDataset], dict[str, np.ndarray]],
    dataset: ImageDataset,
    rows: Sequence[int],
) -> dict[str, np.ndarray] | None:
    """``extract`` of ``dataset``'s ``rows``, in that order (None for no rows); inside a
    process group each rank extracts every size-th of them and all ranks get the whole.

    Strided, not contiguous, shares: a folder sorted by class puts its large images
    together, and striding spreads them."""
    rows = list(rows)
    if not rows:
        return None
    w = world()
    if w.size == 1:
        return extract(dataset.subset(rows))
    share = rows[w.rank :: w.size]
    parts = gather_to_all(extract(dataset.subset(share)) if share else None)
    first = next(part for part in parts if part is not None)
    out = {
        layer: np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
        for layer, array in first.items()
    }
    for rank, part in enumerate(parts):
        if part is not None:
            for layer, array in part.items():
                out[layer][rank :: w.size] = array
    return out
