"""Prediction over images given as paths or PIL images, and over files in bulk: decoded
exactly as in training (EXIF, colour modes, limits), in chunks, with per-file errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from headstart.data.decode import DecodeOptions, decode_image, normalise_image

__all__ = ["ImageList", "Prediction"]


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


class ImageList:
    """Paths or PIL images as a map-style dataset, decoded exactly as in training."""

    def __init__(self, items: Sequence[Any], transform: Any, options: DecodeOptions) -> None:
        self.items = list(items)
        self.transform = transform
        self.options = options

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        if isinstance(item, Image.Image):
            image = normalise_image(item, self.options)
        else:
            image, _ = decode_image(Path(item), self.options)
        return self.transform(image), -1
