"""The window rules a DICOM file is read under (``DecodeOptions.dicom_window``): the
presets, checking a rule, and the rule in words and numbers for a consumer without
headstart (the ONNX card's ``input.dicom``)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["WINDOW_PRESETS", "center_width", "check_window", "describe_rule"]

#: Named windows (center, width) in Hounsfield units, the usual CT viewing presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
}


def check_window(value: Any) -> str | None:
    """Why ``value`` is not a window rule, or None if it is one.

    Rules: ``"file"`` (the file's own window, the default), ``"none"`` (the full range of
    the stored bits), a preset name (`WINDOW_PRESETS`) or ``"CENTER,WIDTH"`` (width >= 1).
    """
    if not isinstance(value, str):
        return "not a string"
    if value in ("file", "none") or value in WINDOW_PRESETS:
        return None
    parsed = center_width(value)
    if parsed is None:
        return ""  # not a rule at all: the expected forms say it all
    if parsed[1] < 1:
        return f"width {parsed[1]:g} is below 1"
    return None


def center_width(text: str) -> tuple[float, float] | None:
    parts = text.split(",")
    if len(parts) != 2:
        return None
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    return (center, width) if math.isfinite(center) and math.isfinite(width) else None


def describe_rule(window: str, frames: str = "middle") -> dict[str, Any]:
    """How `decode_dicom` turns a grayscale file into pixels under the rule ``window``
    (and which frames training read: ``frames``), in words and numbers a consumer
    without headstart can follow (the ONNX card's ``input.dicom``). A preset or
    ``CENTER,WIDTH`` carries its center and width, so a consumer needs no preset table."""
    rule: dict[str, Any] = {"dicom_window": window, "frames": frames}
    fixed = WINDOW_PRESETS.get(window) or (
        center_width(window) if window not in ("file", "none") else None
    )
    if fixed is not None:
        rule["center"], rule["width"] = fixed
        windowing = "LINEAR with the center and width above"
    elif window == "file":
        windowing = (
            "the file's first WindowCenter/WindowWidth with its VOILUTFunction (LINEAR by "
            "default, LINEAR_EXACT: clip((x - c) / w + 0.5, 0, 1), SIGMOID: "
            "1 / (1 + exp(-4 (x - c) / w))); else its first VOI LUT Sequence item, indexed by "
            "the rounded value clipped to the table, divided by 2**bits - 1 "
            "(LUTDescriptor[2]); else the full range of BitsStored "
            "(signed when PixelRepresentation is 1) through the Modality LUT"
        )
    else:
        windowing = (
            "the full range of BitsStored (signed when PixelRepresentation is 1) through "
            "the Modality LUT, (x - low) / (high - low)"
        )
    rule["steps"] = [
        "stored values through the Modality LUT (RescaleSlope, RescaleIntercept or the "
        "Modality LUT Sequence: pydicom.pixels.apply_modality_lut), as float64",
        f"window onto 0..1: {windowing}",
        "LINEAR is clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1); width 1 is x > c - 0.5",
        "MONOCHROME1: 1 - value, so that high values are bright",
        "uint8 = rint(clip(value, 0, 1) * 255), then gray to RGB (R = G = B)",
        "a multi-frame file is predicted from its middle frame, NumberOfFrames // 2 "
        f"(trained on {'every frame' if frames == 'all' else 'the middle frame'} of each file)",
        "RGB, YBR and PALETTE COLOR files: colour scaled from BitsStored to 8 bits, no window",
    ]
    return rule
