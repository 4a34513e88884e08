"""How images become tensors for one backbone, taken from its pretrained config.

Torch-free to import (timm's transforms load only when a transform is built), so a
model's preprocessing can be read where torch is not installed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["Preprocessing", "preprocessing_of"]


@dataclass(frozen=True)
class Preprocessing:
    """How images become tensors for one backbone; taken from its pretrained config."""

    input_size: tuple[int, int, int]  # (channels, height, width)
    interpolation: str  # "bicubic", "bilinear", ...
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float  # resize to size / crop_pct, then crop
    crop_mode: str  # "center", "squash" or "border"

    @property
    def image_size(self) -> int:
        return self.input_size[1]

    def transform(self, training: bool = False) -> Any:
        """A torchvision transform: PIL RGB image -> normalised float tensor (C, H, W).

        Training augmentation is deliberately mild (crops keep at least half the
        image, horizontal flips, light colour jitter): with a few hundred images,
        timm's ImageNet default (crops down to 8 %) destroys more than it teaches.
        """
        from timm.data import create_transform

        if training:
            return create_transform(
                input_size=self.input_size,
                is_training=True,
                scale=(0.5, 1.0),
                hflip=0.5,
                color_jitter=0.2,
                interpolation=self.interpolation,
                mean=self.mean,
                std=self.std,
            )
        return create_transform(
            input_size=self.input_size,
            is_training=False,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
        )

    def resize_crop(self, image: Any) -> Any:
        """The geometry of ``transform()`` alone, in Pillow: a PIL RGB image resized and
        cropped to ``input_size`` exactly as timm's evaluation transform does it (the
        same output sizes and rounding, the same Pillow resampling), before any tensor is
        made. An exported model takes these pixels as they are (uint8, normalised inside
        the graph), so predicting from it needs Pillow and numpy, not torch. Crop modes
        "center" (square sizes, all headstart makes) and "squash"; "border"
        (letterboxing) and a non-square "center" raise ValueError."""
        return self.crop(self.resize_for_crop(image), "center")

    def resize_for_crop(self, image: Any) -> Any:
        """``resize_crop``'s first step: the image resized (Pillow) to the size its crop
        is taken from (``input_size`` / ``crop_pct``), before cropping."""
        height, width = self.input_size[1], self.input_size[2]
        resample = _RESAMPLING.get(self.interpolation)
        if resample is None:
            raise ValueError(f"interpolation {self.interpolation!r} has no Pillow equivalent")
        scale = (math.floor(height / self.crop_pct), math.floor(width / self.crop_pct))
        w, h = image.size
        if self.crop_mode == "squash":
            size = (scale[1], scale[0])  # both edges (torchvision's Resize((h, w)))
        elif self.crop_mode == "center" and scale[0] != scale[1]:
            raise ValueError("a non-square centre crop (timm's ResizeKeepRatio) is torch-only")
        elif self.crop_mode == "center":  # the shorter edge to scale, the ratio kept
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = scale[0], int(scale[0] * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            raise ValueError(f"crop mode {self.crop_mode!r} is not supported outside torch")
        return image if image.size == size else image.resize(size, resample=resample)

    def crop_margin(self) -> tuple[int, int]:
        """(rows, columns) the resize of ``resize_for_crop`` adds at least around the
        crop, whatever the image: 0 when the crop takes the whole resized image."""
        height, width = self.input_size[1], self.input_size[2]
        return (
            max(0, math.floor(height / self.crop_pct) - height),
            max(0, math.floor(width / self.crop_pct) - width),
        )

    def crop(self, image: Any, where: str = "center") -> Any:
        """A crop of ``input_size`` from a resized image: at its centre (as timm's
        evaluation transform), or at a corner ("top-left", "top-right", "bottom-left",
        "bottom-right"; along an edge shorter than the crop, at its centre)."""
        height, width = self.input_size[1], self.input_size[2]
        w, h = image.size
        if (w, h) == (width, height):
            return image
        left, top = _crop_offset(w, width), _crop_offset(h, height)
        if where != "center":
            vertical, horizontal = where.split("-")
            if w > width:
                left = 0 if horizontal == "left" else w - width
            if h > height:
                top = 0 if vertical == "top" else h - height
        # Outside the image (crop_pct > 1): black, as torch.
        return image.crop((left, top, left + width, top + height))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=tuple(data["input_size"]),
            interpolation=str(data["interpolation"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            crop_pct=float(data["crop_pct"]),
            crop_mode=str(data["crop_mode"]),
        )


# timm's interpolation names, as Pillow resampling filters (Image.Resampling values).
_RESAMPLING = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def _crop_offset(size: int, crop: int) -> int:
    """torchvision's CenterCrop offset along one edge: rounded half to even when it
    crops; when the edge is shorter it pads (crop - size) // 2 before it."""
    if size < crop:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


def preprocessing_of(model: Any, image_size: int | None) -> Preprocessing:
    """A timm model's own preprocessing, with only the input size overridden."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    prep = Preprocessing(
        input_size=tuple(config["input_size"]),
        interpolation=str(config["interpolation"]),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        crop_pct=float(config.get("crop_pct", 1.0)),
        crop_mode=str(config.get("crop_mode", "center")),
    )
    if image_size is not None:
        prep = replace(prep, input_size=(prep.input_size[0], image_size, image_size))
    return prep
