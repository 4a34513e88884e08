"""The pixel limit's reason, worded once for every decoder (Pillow, tifffile, pydicom)."""

from __future__ import annotations

__all__ = ["too_many_pixels"]


def too_many_pixels(width: int, height: int, max_pixels: int, kind: str = "image") -> str | None:
    """Why a ``width`` x ``height`` image is refused before its pixels are allocated, or None."""
    if width * height > max_pixels:
        return (
            f"{kind} is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} pixels (DecodeOptions.max_pixels); skipped as a possible "
            "decompression bomb"
        )
    if width == 0 or height == 0:
        return f"{kind} has no pixels ({width}x{height})"
    return None
