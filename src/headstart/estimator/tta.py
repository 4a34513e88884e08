"""Test-time augmentation (TTA): a model scores a few views of each image and its
class probabilities are averaged over them.

The views are made here, in Pillow alone (torch-free), from the same resize the plain
prediction crops its input from (``Preprocessing.resize_for_crop``): the PyTorch model
and an exported ONNX file are given the very same pixels, so they give the same answer
with TTA as without it.

- ``"none"``: the plain view (the centre crop), one forward pass per image;
- ``"flip"``: the plain view and its mirror image, two passes;
- ``"flip+crops"``: those two and the four corner crops of the resized image, six
  passes, where the resize leaves a margin around the crop (``crop_pct`` < 1, as the
  ImageNet models' 0.875); where it leaves none, corner crops would be the centre one
  again, and the mode is ``"flip"``'s two views.

Off by default (``DEFAULT_TTA``): on the benchmarks of docs/BENCHMARKS.md (section 13)
flip alone lost on two of four, and flip+crops gained 0.55 to 1.5 points at about 7x the
prediction time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from headstart._internal.validation import Options, validate

if TYPE_CHECKING:  # cheap to import: the command line reads TTA_MODES for its --help
    import numpy as np
    from PIL import Image

__all__ = [
    "DEFAULT_TTA",
    "TTA_MODES",
    "average_views",
    "check_tta",
    "tta_views",
    "view_count",
]

TTA_MODES = ("none", "flip", "flip+crops")
# What predicting uses when nobody asks: measured in bench/bench_tta.py
# (docs/BENCHMARKS.md, section 13).
DEFAULT_TTA = "none"
TTA_CONSTRAINT = Options(TTA_MODES)
_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def check_tta(owner: str, tta: Any, default: str = DEFAULT_TTA) -> str:
    """``tta`` checked against ``TTA_MODES`` (a ConfigError naming ``owner``'s ``tta``
    parameter otherwise); None is ``default``."""
    if tta is None:
        return default
    validate(owner, {"tta": TTA_CONSTRAINT}, {"tta": tta})
    return tta


def _with_crops(tta: str, preprocessing: Any) -> bool:
    return tta == "flip+crops" and min(preprocessing.crop_margin()) > 0


def view_count(tta: str, preprocessing: Any) -> int:
    """Forward passes per image: 1, 2 or 6 (``"flip+crops"`` is 2 where the model's
    resize leaves no margin for corner crops)."""
    if tta == "none":
        return 1
    return 2 + len(_CORNERS) if _with_crops(tta, preprocessing) else 2


def tta_views(image: Image.Image, preprocessing: Any, tta: str) -> list[Image.Image]:
    """The views of one decoded RGB image, each of the model's input size, the plain
    view (``Preprocessing.resize_crop``'s) first; ``view_count`` of them."""
    from PIL import ImageOps

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = preprocessing.resize_for_crop(rgb)
    plain = preprocessing.crop(resized, "center")
    if tta == "none":
        return [plain]
    views = [plain, ImageOps.mirror(plain)]
    if _with_crops(tta, preprocessing):
        views += [preprocessing.crop(resized, corner) for corner in _CORNERS]
    return views


def average_views(proba: np.ndarray, count: int) -> np.ndarray:
    """(N x count, classes) probabilities, each image's views in a row, as (N, classes):
    the mean over each image's views (in float64, back to the input's dtype)."""
    import numpy as np

    if count == 1:
        return proba
    rows = proba.reshape(-1, count, proba.shape[-1])
    return rows.astype(np.float64).mean(axis=1).astype(proba.dtype)
