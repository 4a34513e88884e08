"""Prediction over images given as paths or PIL images, and over files in bulk: decoded
exactly as in training (EXIF, colour modes, limits), in chunks, with per-file errors;
scores that are not finite are refused here, once, so no face reports ``nan%``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headstart.backbones.registry import Backbone
from headstart.data.dataset import ImageDataset
from headstart.data.decode import (
    DecodeOptions,
    check_image_array,
    decode_array,
    decode_image,
    normalise_image,
)
from headstart.errors import DataError, ImageDecodeError, WeightsError
from headstart.features.cache import FeatureCache, cached_features
from headstart.train.callbacks import Callback

__all__ = ["ImageList", "Prediction", "check_finite_scores", "proba_from_cached_features"]


@dataclass(frozen=True)
class Prediction:
    """The top classes for one image, most probable first."""

    source: str  # the file path
    top: tuple[tuple[str, float], ...]  # (class name, probability)

    @property
    def label(self) -> str:
        return self.top[0][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.source,
            "predictions": [{"class": name, "probability": p} for name, p in self.top],
        }


def proba_from_cached_features(
    clf: Any, dataset: ImageDataset, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """Class probabilities of a frozen-body model (feature extraction, semi-supervised)
    from the feature cache: the body is what was cached during ``fit``, so a test set
    scored twice, or a second seed's split, runs no forward pass for images already
    seen; the head then sees exactly the kind of features it was trained on."""
    callback = clf.callback or Callback()
    backbone = Backbone(clf.backbone, clf.model_.body, clf.preprocessing_, clf.weights_info_)
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


def check_finite_scores(proba: np.ndarray, images: Any, folder: Path | None) -> np.ndarray:
    """``proba`` unchanged, or a WeightsError naming the model (its ``folder`` when it
    was loaded from one) and the images
    whose scores hold NaN or infinity. Such scores come from a damaged model (a NaN
    weight, a standard deviation of 0) and would otherwise be printed as ``nan%``,
    written as invalid JSON, or counted as wrong answers in an accuracy."""
    bad = np.flatnonzero(~np.isfinite(proba).all(axis=1)) if proba.size else []
    if len(bad) == 0:
        return proba
    names = [_image_name(images, int(i)) for i in bad[:3]]
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    origin = f"The model in {folder}" if folder is not None else "The model"
    raise WeightsError(
        f"{origin} gave non-finite scores (NaN or infinity) for {len(bad)} of "
        f"{len(proba)} image(s): {', '.join(names)}{more}; its weights or preprocessing "
        "are damaged."
    )


def _image_name(images: Any, i: int) -> str:
    if isinstance(images, ImageDataset):
        return images.source(i)
    item = list(images)[i] if not isinstance(images, Sequence) else images[i]
    return f"image {i} (in memory)" if isinstance(item, Image.Image) else str(item)


class ImageList:
    """Paths, PIL images or uint8 arrays as a map-style dataset, decoded exactly as in
    training. Each item's kind is checked when the list is made, so a ``None`` in a
    list of 10,000 fails before the first batch runs, naming its index."""

    def __init__(self, items: Sequence[Any], transform: Any, options: DecodeOptions) -> None:
        self.items = list(items)
        self.transform = transform
        self.options = options
        for index, item in enumerate(self.items):
            if isinstance(item, np.ndarray):
                check_image_array(item, f"images[{index}]")
            elif not isinstance(item, str | os.PathLike | Image.Image):
                raise DataError(
                    f"images[{index}]: a {type(item).__name__} is not an image; expected "
                    "a file path, a PIL image or a uint8 array"
                )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        if isinstance(item, Image.Image):
            if 0 in item.size:  # PIL allows Image.new("RGB", (0, 0)); resizing it divides by 0
                width, height = item.size
                raise ImageDecodeError(
                    f"images[{index}]", f"image has no pixels ({width}x{height})"
                )
            image = normalise_image(item, self.options)
        elif isinstance(item, np.ndarray):
            image = decode_array(item, f"images[{index}]")
        else:
            image, _ = decode_image(Path(item), self.options)
        return self.transform(image), -1
