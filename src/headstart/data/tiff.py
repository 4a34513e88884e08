"""TIFF stacks Pillow cannot read, through tifffile (the optional extra ``headstart[tiff]``).

Microscopes write multi-page, 16-bit and float32 TIFFs, and some of them (16-bit RGB,
float64, planar samples, signed ints) are beyond Pillow. `decode.decode_bytes` tries
Pillow first and comes here only when Pillow fails on a TIFF; the page chosen (the
middle one by default) and the scaling rules are the same as for Pillow's TIFFs.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from headstart.data.bounds import too_many_pixels
from headstart.errors import ImageDecodeError

__all__ = ["is_tiff", "tiff_frame"]

_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def is_tiff(data: bytes) -> bool:
    return data[:4] in _MAGIC


def tiff_frame(
    data: bytes, label: str, frame: int | None, max_pixels: int
) -> tuple[np.ndarray, int, int, str]:
    """``(pixels, pages, page, dtype)``: one page as (H, W) or (H, W, samples).

    ``frame`` None is the middle page. Raises ImageDecodeError naming ``label``."""
    try:
        import tifffile
    except ImportError:
        raise ImageDecodeError(
            label,
            "a TIFF Pillow cannot read (e.g. 16-bit RGB or float64), and tifffile is not "
            "installed: pip install 'headstart[tiff]'",
        ) from None
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            pages = len(tiff.pages)
            if pages == 0:
                raise ImageDecodeError(label, "TIFF file with no pages")
            index = pages // 2 if frame is None else frame
            if not 0 <= index < pages:
                raise ImageDecodeError(label, f"has no frame {index}: it has {pages} pages")
            page = tiff.pages[index]
            _check_size(page, label, max_pixels)
            pixels = _samples_last(np.asarray(page.asarray()), page, label)
    except ImageDecodeError:
        raise
    except Exception as error:  # tifffile raises many types for malformed files
        message = " ".join(str(error).split())[:200] or "no message"
        raise ImageDecodeError(
            label, f"cannot decode TIFF ({type(error).__name__}: {message})"
        ) from None
    return pixels, pages, index, str(pixels.dtype)


def _check_size(page: Any, label: str, max_pixels: int) -> None:
    refused = too_many_pixels(int(page.imagewidth), int(page.imagelength), max_pixels)
    if refused is not None:
        raise ImageDecodeError(label, refused)


def _samples_last(pixels: np.ndarray, page: Any, label: str) -> np.ndarray:
    axes = str(getattr(page, "axes", ""))
    if pixels.ndim == 3 and axes.startswith("S"):  # planar: samples first
        pixels = np.moveaxis(pixels, 0, -1)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4)):
        return pixels
    raise ImageDecodeError(
        label,
        f"TIFF page has shape {pixels.shape} (axes {axes or '?'}); expected gray, RGB or RGBA "
        "samples (a page of 2 or 5+ channels has no RGB reading)",
    )
