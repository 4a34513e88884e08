"""One message shape for invalid parameters, as in scikit-learn."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from headstart.errors import ConfigError

# Feature layer names besides "final": stage<i> counts from the input, stage-<j> from the end.
LAYER_PATTERN = re.compile(r"stage(0|[1-9][0-9]*|-[1-9][0-9]*)", re.ASCII)

# A layer pooled over a g x g grid instead of globally: "final_2x2", "stage-1_3x3".
GRID_SUFFIX = re.compile(r"_([1-4])x\1", re.ASCII)


def split_layer(layer: str) -> tuple[str, int]:
    """(base layer, grid side): "stage-1_2x2" -> ("stage-1", 2); "final" -> ("final", 1).
    The base is returned as given, unchecked; a suffix that is not a grid stays on it."""
    match = GRID_SUFFIX.search(layer)
    if match is None or match.end() != len(layer):
        return layer, 1
    return layer[: match.start()], int(match.group(1))


def is_layer_name(layer: object) -> bool:
    """Whether ``layer`` is spelled as a feature layer ("final", "stage2", "stage-1",
    each optionally with a grid suffix such as "_2x2"), whatever the model."""
    if not isinstance(layer, str):
        return False
    base, _ = split_layer(layer)
    return base == "final" or LAYER_PATTERN.fullmatch(base) is not None


# The input resolution a model may be asked for, in pixels per side. Below 16 px the
# strided stages of a CNN leave nothing to pool. Above 2048 px no backbone has been
# trained (timm's largest pretrained inputs are 800 px), and the cost grows with the
# square: one batch of 32 images at 2048 px is already 1.6 GB of input in float32,
# while 100,000 px asked for 240 GB before the bound was there.
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 2048
IMAGE_SIZE_RANGE = f"an int from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} (pixels per side)"


def image_size_fits(value: object) -> bool:
    """Whether ``value`` is an image size in the accepted range (one rule for the
    training config and for ``create_backbone``)."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE
    )


def invalid(
    owner: str, name: str, requirement: str, value: Any, *, hint: str | None = None
) -> ConfigError:
    """Build the error for a parameter that breaks its requirement (it names the
    parameter, so a face can word it as its own flag)."""
    return ConfigError(
        f"The {name!r} parameter of {owner} must be {requirement}. Got {value!r} instead.",
        hint=hint,
        parameter=name,
        requirement=requirement,
        value=value,
    )


def is_int(value: Any) -> bool:
    """An int (NumPy's too: they register as ``numbers.Integral``), never a bool: ``True``
    is not a batch size. No NumPy import here: the command line's start-up reads this."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """An int or float that is neither a bool, NaN nor infinite (a learning rate of
    ``inf`` would train nothing but NaNs, long after the call that took it)."""
    is_number = isinstance(value, numbers.Real)  # NumPy's numbers too; its bool is not
    return is_number and not isinstance(value, bool) and math.isfinite(value)


def check_int(owner: str, name: str, value: Any, low: int = 1) -> None:
    """Raise ``invalid(...)`` unless ``value`` is an int >= ``low``."""
    if not is_int(value) or value < low:
        raise invalid(owner, name, f"an int >= {low}", value)


def check_finite(owner: str, name: str, value: Any, low: float | None = None) -> None:
    """Raise ``invalid(...)`` unless ``value`` is a finite number (>= ``low`` when given)."""
    if not is_finite_number(value) or (low is not None and value < low):
        requirement = "a finite number" + (f" >= {low:g}" if low is not None else "")
        raise invalid(owner, name, requirement, value)
