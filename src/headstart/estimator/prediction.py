"""PyTorch's side of prediction: images given as paths, PIL images or arrays as a
dataset the model's transform reads (decoded exactly as in training: EXIF, colour
modes, limits), and a frozen-body model's scores from the feature cache. What a
prediction gives back, and its checks, are in ``results`` (torch-free)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.backbones.registry import Backbone
from headstart.data.dataset import ImageDataset
from headstart.data.decode import DecodeOptions
from headstart.estimator.results import check_image_inputs, image_input
from headstart.estimator.tta import average_views, tta_views
from headstart.features.cache import FeatureCache, cached_features
from headstart.features.fastpath import (
    faithful_logits,
    fast_path_available,
    micro_batches,
    numerics,
    split_transform,
)
from headstart.strategies.common import repeats_note
from headstart.train.callbacks import Callback

__all__ = ["ImageList", "network_proba", "proba_from_cached_features", "views_transforms"]


def network_proba(
    model: torch.nn.Module,
    run: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    device: torch.device,
    fast: bool,
    views: int,
) -> list[np.ndarray]:
    """Each batch's class probabilities (its ``views`` averaged) through ``run``, the
    model to predict with (``inference_model``'s of ``model``): on the fast path in its
    slices and layout, and rows too close to call there recomputed by ``model`` in fp32."""
    fast_path = fast and fast_path_available(device)
    layout = torch.channels_last if fast_path else torch.contiguous_format
    chunks = []
    with torch.inference_mode(), numerics(run, device, fast):
        for batch in batches:
            batch = batch.to(device)
            logits = torch.cat([
                run(part.contiguous(memory_format=layout)).float()
                for part in micro_batches(batch, device, fast)
            ])  # fmt: skip
            if fast_path:  # the model's own order, not bf16's: close rows in fp32
                logits = faithful_logits(logits, batch, model, run)
            chunks.append(average_views(torch.softmax(logits, dim=1).cpu().numpy(), views))
    return chunks


def proba_from_cached_features(
    clf: Any, dataset: ImageDataset, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """Class probabilities of a frozen-body model (feature extraction, semi-supervised)
    from the feature cache: the body is what was cached during ``fit``, so a test set
    scored twice, or a second seed's split, runs no forward pass for images already
    seen; the head then sees exactly the kind of features it was trained on."""
    callback = clf.callback or Callback()
    backbone = Backbone(clf.backbone, clf.model_.body, clf.preprocessing_, clf.weights_info_)
    said = repeats_note(dataset)
    if said is not None:
        callback.on_stage("features", said)
    try:
        found, _ = cached_features(
            backbone,
            dataset,
            FeatureCache(Path(clf.cache_dir)),
            layers=clf.config_.layers,
            fast=clf.config_.fast,
            device=device,
            batch_size=batch_size,
            progress=lambda done, total: callback.on_progress("features", done, total),
            notice=lambda text: callback.on_stage("feature cache", text),
        )
    finally:  # the fitted model goes back as it came: on the CPU
        clf.model_.cpu()
    features = np.concatenate([found[layer] for layer in clf.config_.layers], axis=1)
    with torch.inference_mode():
        logits = clf.model_.head(torch.from_numpy(features).float())
        return torch.softmax(logits.float(), dim=1).numpy()


class ImageList:
    """Paths, PIL images or uint8 arrays as a map-style dataset, decoded exactly as in
    training. Each item's kind is checked when the list is made, so a ``None`` in a
    list of 10,000 fails before the first batch runs, naming its index."""

    def __init__(self, items: Sequence[Any], transform: Any, options: DecodeOptions) -> None:
        self.items = check_image_inputs(items)
        self.transform = transform
        self.options = options

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(image_input(self.items[index], index, self.options)), -1


def views_transforms(preprocessing: Any, tta: str) -> tuple[Callable, Callable]:
    """(per-image transform, batch collate) for test-time augmentation: each image
    becomes its views (``tta.tta_views``, Pillow: the same pixels an exported model is
    given), and a batch of B images becomes one tensor of B x views rows, each image's
    views side by side, scaled and normalised once per batch as on the fast path."""
    from torchvision import transforms

    finish = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(preprocessing.mean, preprocessing.std)]
    )
    _, batch_finish = split_transform(finish)

    def collate(items: list[tuple[list[Any], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch_finish([(view, label) for views, label in items for view in views])

    return (lambda image: tta_views(image, preprocessing, tta)), collate
