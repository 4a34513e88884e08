"""The picture the model saw, small, as a PNG data URI: a browser cannot show a DICOM
file (nor a TIFF), and for a scan the windowed gray image is what matters anyway."""

from __future__ import annotations

import base64
from io import BytesIO

from PIL import Image

__all__ = ["PREVIEW_SIDE", "preview_uri"]

PREVIEW_SIDE = 256  # the longer side of a preview, in pixels (a 256x256 PNG: tens of kB)


def preview_uri(image: Image.Image, side: int = PREVIEW_SIDE) -> str:
    """``image`` (decoded: windowed, inverted, orientated) shrunk to fit ``side`` pixels,
    as ``data:image/png;base64,...``. Only pixels go out: the PNG carries no metadata
    (no ICC profile, no text chunk) of the upload."""
    small = image.convert("RGB")  # a new image; its info is cleared below either way
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    small.info = {}
    buffer = BytesIO()
    small.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
