"""How images become tensors for one backbone, taken from its pretrained config.

Torch-free to import (timm's transforms load only when a transform is built), so a
model's preprocessing can be read where torch is not installed.
"""

from __future__ import annotations

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
