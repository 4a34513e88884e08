"""What an exported ONNX file promises, torch-free: its input, its outputs, and the
model card it carries (in ``metadata_props`` and a JSON sidecar beside it).

The input is **uint8 RGB pixels, NHWC** (``image``: batch x height x width x 3), already
resized and cropped to the model's input size; the graph itself casts, scales by 1/255
and normalises with the backbone's mean and std. Chosen over float32 NCHW because:

- the normalisation cannot be got wrong by the consumer (the most common silent export
  bug: the right file with the wrong mean and std, and accuracy quietly gone);
- uint8 HWC is what every image library hands over (Pillow, OpenCV, a browser's
  canvas, Android's Bitmap), so a consumer in any language makes no tensor by hand;
- a quarter of the bytes per request.

What stays outside the graph is the resize and crop, which depend on each image's own
size: ``Preprocessing.resize_crop`` (Pillow only) does it as the PyTorch model did, and
the card's ``preprocessing`` says how, for a consumer that has no headstart. So does the
decoding: ``decode_options`` holds the rules, and ``input.dicom`` spells out how a DICOM
scan becomes pixels (Modality LUT, window, MONOCHROME1 inversion, rounding), as
``docs/examples/dicom_consumer.py`` follows it with pydicom and numpy alone.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from headstart._internal.files import DESCRIPTION_MAX_BYTES, FileRefused, read_capped
from headstart._internal.validation import IMAGE_SIZE_RANGE, image_size_fits
from headstart.backbones.preprocessing import Preprocessing
from headstart.errors import DataError
from headstart.estimator.tta import TTA_MODES

__all__ = [
    "CARD_FORMAT",
    "SOURCE_FIELD",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "card_from_props",
    "check_card",
    "check_exported_from",
    "check_output_width",
    "image_pixels",
    "metadata_props",
    "read_card",
    "sidecar_path",
]

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")
CARD_FORMAT = "headstart-onnx/1"
# The field of a model folder's headstart.json holding its weights file's sha256
# (estimator.model_checks.WEIGHTS_HASH_FIELD, spelt here so reading it needs no torch);
# a card keeps the value it was exported from, so a stale export is told apart.
SOURCE_FIELD = "weights_file_sha256"
# Every card holds these; a file without them was not written by headstart export.
_REQUIRED = ("format", "input", "classes", "preprocessing", "backbone", "strategy")


def image_pixels(image: Any, preprocessing: Preprocessing) -> np.ndarray:
    """A decoded PIL RGB image as the exported model's input row: (H, W, 3) uint8."""
    return np.asarray(preprocessing.resize_crop(image.convert("RGB")), dtype=np.uint8)


def metadata_props(card: dict[str, Any]) -> dict[str, str]:
    """The card as ONNX ``metadata_props``: one key per field, each value JSON (ONNX
    keeps strings only), so a tool like Netron shows each field on its own line."""
    return {key: json.dumps(value, ensure_ascii=False) for key, value in card.items()}


def card_from_props(props: dict[str, str], source: str | os.PathLike[str]) -> dict[str, Any]:
    """The card back from ``metadata_props``; a DataError naming ``source`` when the file
    does not carry a headstart card (or carries a damaged one)."""
    try:
        card = {key: json.loads(value) for key, value in props.items()}
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: its headstart metadata cannot be read ({exc}).") from exc
    missing = [key for key in _REQUIRED if key not in card]
    if missing:
        raise DataError(
            f"{source}: not a model exported by headstart (metadata lacks "
            f"{', '.join(missing)}); export one with `headstart export`."
        )
    if card["format"] != CARD_FORMAT:
        raise DataError(f"{source}: model card format {card['format']!r} is not supported.")
    check_card(card, source)
    return card


def check_card(card: dict[str, Any], source: str | os.PathLike[str]) -> None:
    """A DataError naming ``source`` and the field, for a card whose values no model
    saved by headstart has (a damaged or edited file), with the bounds ``TrainConfig``
    holds a model to: an input size of 16-2048 px, three finite means and positive
    stds, and classes as distinct names. Checked before any image is resized by them."""

    def bad(field: str, requirement: str, value: Any) -> DataError:
        return DataError(
            f"{source}: its metadata field {field!r} must be {requirement}; it holds "
            f"{_short(value)} (the file is damaged or was edited; export it again)."
        )

    classes = card["classes"]
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise bad("classes", "a list of distinct class names", classes)
    pre = card["preprocessing"]
    if not isinstance(pre, dict):
        raise bad("preprocessing", "an object", pre)
    size = pre.get("input_size")
    if (
        not isinstance(size, list)
        or len(size) != 3
        or size[0] != 3
        or not all(image_size_fits(side) for side in size[1:])
    ):
        raise bad(
            "preprocessing.input_size", f"[3, height, width], each side {IMAGE_SIZE_RANGE}", size
        )
    for field, positive in (("mean", False), ("std", True)):
        values = pre.get(field)
        if (
            not isinstance(values, list)
            or len(values) != 3
            or not all(_finite(v) and (v > 0 or not positive) for v in values)
        ):
            requirement = "three finite numbers" + (" > 0" if positive else "")
            raise bad(f"preprocessing.{field}", requirement, values)
    crop = pre.get("crop_pct")
    if not _finite(crop) or not 0 < crop <= 10:
        raise bad("preprocessing.crop_pct", "a number in (0, 10]", crop)
    if "tta" in card and card["tta"] not in TTA_MODES:
        raise bad("tta", f"one of {TTA_MODES}", card["tta"])


def check_output_width(shape: Any, card: dict[str, Any], source: str | os.PathLike[str]) -> None:
    """A DataError when the graph's outputs (``shape``: N x classes; a symbolic width is
    not checked) are not one score per class of the card."""
    width = shape[-1] if len(shape) else None
    if isinstance(width, int) and width != len(card["classes"]):
        raise DataError(
            f"{source}: its metadata field 'classes' names {len(card['classes'])} classes, "
            f"but the model answers with {width} scores (the file is damaged or was "
            "edited; export it again)."
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The card of an exported file, read with onnxruntime (no torch)."""
    from headstart.export.session import open_session

    session = open_session(Path(path))
    return card_from_props(dict(session.get_modelmeta().custom_metadata_map), path)


def check_exported_from(card: dict[str, Any], folder: Path, onnx_file: Path) -> None:
    """A DataError when ``onnx_file`` in a model ``folder`` was exported from other weights
    than the folder holds now (it was retrained since): it would answer as the old model."""
    meta = folder / "headstart.json"
    try:
        text = read_capped(meta, DESCRIPTION_MAX_BYTES, over="the cap for a model description")
        current = json.loads(text).get(SOURCE_FIELD)
    except (OSError, ValueError, AttributeError, FileRefused):
        return  # no readable model beside it: the file is on its own
    exported = (card.get("source_model") or {}).get(SOURCE_FIELD)
    if current and exported and exported != current:  # None: exported before saving
        raise DataError(
            f"{onnx_file} was exported from an earlier model than the one in {folder} now "
            f"(the model was trained again since); export it again with "
            f"`headstart export {folder}`."
        )


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar beside an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")
