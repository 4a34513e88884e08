"""How an image is to be decoded, and what decoding did: the options saved with a model
(so prediction decodes exactly as training did), the report of one decode, and the
``path#frame=K`` sources that name one frame of a stack."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart._internal.validation import invalid
from headstart.data.dicom import DicomInfo, check_window

#: How multi-frame DICOM files and multi-page TIFF stacks are read: the middle frame, or
#: every frame as an image of its own (of the file's label, kept on one side of a split).
FRAME_RULES = ("middle", "all")

# One frame of a file, as a source: "scan.dcm#frame=3" (frames counted from 0).
_FRAME_SUFFIX = re.compile(r"^(?P<path>.+)#frame=(?P<frame>\d{1,6})$", re.DOTALL)

# Pillow's own default for Image.MAX_IMAGE_PIXELS. Written out rather than read from
# Pillow's mutable global, so a decode result never depends on what other code did
# to that global before headstart was imported.
PILLOW_DEFAULT_MAX_PIXELS = 89_478_485


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class DecodeOptions:
    """Limits and colour choices applied to every decoded image.

    Saved with a model so prediction decodes exactly as training did.
    """

    max_pixels: int = PILLOW_DEFAULT_MAX_PIXELS  # width*height above this: skipped as a bomb
    max_side: int = 1024  # longer side above this: downscaled while decoding (bounded memory)
    background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels are composited on it
    # DICOM values to 0..255: "file" (the file's first window, else its VOI LUT, else the
    # full range), "none" (the full range the stored bits hold), a preset name such as
    # "lung" or "bone", or "CENTER,WIDTH".
    dicom_window: str = "file"
    frames: str = "middle"  # multi-frame DICOM and TIFF stacks: "middle" or "all" (FRAME_RULES)

    def __post_init__(self) -> None:
        if not _is_int(self.max_pixels) or self.max_pixels <= 0:
            raise invalid("DecodeOptions", "max_pixels", "an int > 0", self.max_pixels)
        if not _is_int(self.max_side) or self.max_side <= 0:
            raise invalid("DecodeOptions", "max_side", "an int > 0", self.max_side)
        background = self.background
        if (
            isinstance(background, str | bytes)
            or not hasattr(background, "__len__")
            or len(background) != 3
            or not all(_is_int(c) and 0 <= c <= 255 for c in background)
        ):
            raise invalid(
                "DecodeOptions", "background", "three ints in [0, 255] (R, G, B)", background
            )
        # Lists are accepted for convenience; store a tuple so the options stay hashable.
        object.__setattr__(self, "background", tuple(int(c) for c in background))
        why = check_window(self.dicom_window)
        if why is not None:  # "" for a value of no recognisable form
            raise invalid(
                "DecodeOptions",
                "dicom_window",
                "'file', 'none', a preset (lung, mediastinum, abdomen, liver, brain, bone) "
                "or 'CENTER,WIDTH' with WIDTH >= 1" + (f" ({why})" if why else ""),
                self.dicom_window,
            )
        if self.frames not in FRAME_RULES:
            raise invalid("DecodeOptions", "frames", "'middle' or 'all'", self.frames)


@dataclass(frozen=True)
class DecodeInfo:
    """What decoding had to do to a file, for the load report."""

    original_mode: str
    original_size: tuple[int, int]  # (width, height) as stored, before rotation or downscaling
    rotated: bool  # EXIF orientation was applied
    conversion: str | None  # e.g. "CMYK->RGB"; None when the file was already RGB
    frames: int  # > 1 for animations, multi-page and multi-frame files
    downscaled: bool
    frame: int = 0  # the frame decoded (the first of an animation, the middle of a stack)
    dicom: DicomInfo | None = None  # what a DICOM file was (pixel-module facts only)
    stack: bool = False  # a DICOM or TIFF stack, whose frames FRAME_RULES choose from


def frame_source(path: str, frame: int) -> str:
    """The source naming frame ``frame`` (from 0) of the stack at ``path``."""
    return f"{path}#frame={frame}"


def split_frame(source: str | Path) -> tuple[str | Path, int | None]:
    """``(path, frame)`` of a `frame_source`, ``(source, None)`` for a plain path.

    A file whose own name ends in ``#frame=N`` is still that file."""
    text = str(source)
    match = _FRAME_SUFFIX.match(text)
    if match is None or Path(text).exists():
        return source, None
    return match["path"], int(match["frame"])
