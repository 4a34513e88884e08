"""What a saved model folder must agree with before it is trusted to predict.

``headstart.json`` is text anyone can edit and ``model.safetensors`` bytes a disk can
damage; either can make a model that loads and then answers wrongly (a class list
one short shifts every name, a flipped bit moves a weight, a standard deviation of 0
makes every score NaN). Each check here turns such a folder into an error naming the
file and the field, at load, before any image is read.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from headstart._internal.validation import (
    IMAGE_SIZE_RANGE,
    POSITIVE_INT,
    image_size_fits,
    is_layer_name,
)
from headstart.errors import DataError, WeightsError

__all__ = [
    "INTERPOLATIONS",
    "WEIGHTS_HASH_FIELD",
    "check_description",
    "check_finite_weights",
    "check_weights_hash",
    "weights_hash",
]

# The field of headstart.json holding the sha256 of model.safetensors as saved; models
# saved before it existed load without the check.
WEIGHTS_HASH_FIELD = "weights_file_sha256"

# The interpolations timm's transforms accept by name.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")

CROP_MODES = ("center", "squash", "border")


def weights_hash(blob: bytes) -> str:
    """The sha256 recorded at save and compared at load."""
    return hashlib.sha256(blob).hexdigest()


def check_weights_hash(path: Path, blob: bytes, meta: Mapping[str, Any]) -> None:
    """WeightsError naming ``path`` unless its bytes are the ones saved (when recorded)."""
    expected = meta.get(WEIGHTS_HASH_FIELD)
    if expected is None:
        return  # a model saved before the hash was recorded
    if not isinstance(expected, str):
        raise DataError(
            f"{path.parent / 'headstart.json'}: field {WEIGHTS_HASH_FIELD!r} must be a "
            f"sha256 in hex, got {expected!r}."
        )
    found = weights_hash(blob)
    if found != expected:
        raise WeightsError(
            f"{path}: the weights changed since the model was saved (sha256 {found}, "
            f"headstart.json records {expected}); the file is damaged or was replaced.",
            hint="Copy the model folder again from where it was trained, or train again.",
        )


def check_finite_weights(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """WeightsError naming the file and the tensors holding NaN or infinity: such a model
    scores every image NaN (save refuses them; this catches a model damaged after)."""
    bad = sorted(
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    )
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise WeightsError(f"{path}: non-finite weights (NaN or infinity) in {shown}.")


def check_description(meta_path: Path, meta: Mapping[str, Any]) -> None:
    """DataError naming ``meta_path`` and the field, unless ``classes`` and
    ``preprocessing`` are usable and agree with the head the weights are loaded into."""
    _check_classes(meta_path, meta)
    _check_preprocessing(meta_path, meta["preprocessing"])
    if isinstance(meta.get("ensemble"), Mapping):
        members = meta["ensemble"].get("members")
        for member in members if isinstance(members, list) else []:
            _check_member(meta_path, member)


def _check_member(meta_path: Path, member: Any) -> None:
    """An ensemble member's input, width and layers: what its network is rebuilt from."""
    given = member.get("input") if isinstance(member, Mapping) else None
    if not isinstance(given, Mapping):
        raise _fail(meta_path, "ensemble member input", "a mapping", given)
    size = given.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(image_size_fits(v) for v in size)):
        raise _fail(
            meta_path,
            "ensemble member input size",
            f"[height, width], each {IMAGE_SIZE_RANGE}",
            size,
        )
    for name in ("scale", "shift"):
        values = given.get(name)
        if not (isinstance(values, list) and len(values) == 3 and all(map(_finite, values))):
            raise _fail(meta_path, f"ensemble member input {name}", "3 finite numbers", values)
    width = member.get("width")
    if not POSITIVE_INT.accepts(width):
        raise _fail(meta_path, "ensemble member width", POSITIVE_INT.description, width)
    layers = member.get("layers")
    if not (isinstance(layers, list) and layers and all(map(is_layer_name, layers))):
        raise _fail(meta_path, "ensemble member layers", "a list of layer names", layers)


def _fail(meta_path: Path, field: str, requirement: str, value: Any) -> DataError:
    return DataError(f"{meta_path}: field {field!r} must be {requirement}; got {value!r}.")


def _check_classes(meta_path: Path, meta: Mapping[str, Any]) -> None:
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise _fail(meta_path, "classes", "a list of class names", classes)
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise _fail(
            meta_path, "classes", "distinct names (repeated: " + ", ".join(repeated) + ")", classes
        )
    head = meta["head"]
    wanted = head.get("num_classes") if isinstance(head, Mapping) else None
    if isinstance(wanted, int) and len(classes) != wanted:
        raise _fail(
            meta_path, "classes", f"{wanted} names, one per output of the model's head", classes
        )


def _check_preprocessing(meta_path: Path, prep: Any) -> None:
    if not isinstance(prep, Mapping):
        raise _fail(meta_path, "preprocessing", "a mapping", prep)
    missing = [
        k
        for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        if k not in prep
    ]
    if missing:
        raise DataError(f"{meta_path}: field(s) {', '.join(missing)} of 'preprocessing' missing.")
    size = prep["input_size"]
    if (
        not isinstance(size, list)
        or len(size) != 3
        or not all(map(POSITIVE_INT.accepts, size))
        or size[0] != 3
        or not all(map(image_size_fits, size[1:]))
    ):
        raise _fail(meta_path, "input_size", f"[3, height, width], each {IMAGE_SIZE_RANGE}", size)
    if prep["interpolation"] not in INTERPOLATIONS:
        raise _fail(
            meta_path, "interpolation", "one of " + ", ".join(INTERPOLATIONS), prep["interpolation"]
        )
    for field, positive in (("mean", False), ("std", True)):
        values = prep[field]
        if (
            not isinstance(values, list)
            or len(values) != 3
            or not all(_finite(v) and (v > 0 if positive else True) for v in values)
        ):
            what = "3 finite numbers" + (" > 0" if positive else "")
            raise _fail(meta_path, field, what, values)
    if not (_finite(prep["crop_pct"]) and prep["crop_pct"] > 0):
        raise _fail(meta_path, "crop_pct", "a finite number > 0", prep["crop_pct"])
    if prep["crop_mode"] not in CROP_MODES:
        raise _fail(meta_path, "crop_mode", "one of " + ", ".join(CROP_MODES), prep["crop_mode"])


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
