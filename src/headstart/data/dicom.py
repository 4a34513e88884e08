"""DICOM files as images: stored values through the Modality LUT, a window, and inversion.

pydicom (the optional extra ``headstart[dicom]``) parses the file and decodes its pixel
data; pylibjpeg's plugins decode the compressed transfer syntaxes. This module turns the
decoded values into the 8-bit gray (or RGB) picture every other image becomes:

1. stored values -> Modality LUT (``RescaleSlope``/``RescaleIntercept``, or a Modality
   LUT Sequence): physical units, e.g. Hounsfield units for CT;
2. -> a window (the file's first ``WindowCenter``/``WindowWidth``, else its VOI LUT
   Sequence; or a preset, an explicit ``CENTER,WIDTH``, or ``none``: the full range the
   stored bits can hold) -> 0..1;
3. ``MONOCHROME1`` inverted, so that high values are bright, as in ``MONOCHROME2``.

Privacy: nothing here reads a patient, study or institution attribute, and no message
carries a value read from the file other than pixel-module numbers (bits, sizes, the
window); pydicom's own messages are scrubbed of identifying values before they are kept.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from headstart.data.bounds import too_many_pixels
from headstart.data.dicom_privacy import IDENTIFYING_KEYWORDS, scrub
from headstart.data.dicom_rules import WINDOW_PRESETS, center_width, check_window, describe_rule
from headstart.errors import ImageDecodeError

__all__ = [
    "DICOM_EXTENSIONS",
    "IDENTIFYING_KEYWORDS",
    "WINDOW_PRESETS",
    "DicomInfo",
    "check_window",
    "decode_dicom",
    "describe_rule",
    "is_dicom",
]

#: File name endings read as DICOM; files with other names are recognised by the
#: ``DICM`` marker at byte 128 (scanners often write names without an extension).
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})

_MARKER_AT = 128
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_PIXEL_DATA = "(7FE0,0010)"

# What each pixel-module tag is called in a message: keyword and (group,element).
_TAGS = {
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
    "BitsAllocated": "(0028,0100)",
    "BitsStored": "(0028,0101)",
    "PixelRepresentation": "(0028,0103)",
    "SamplesPerPixel": "(0028,0002)",
    "PhotometricInterpretation": "(0028,0004)",
    "NumberOfFrames": "(0028,0008)",
    "WindowCenter": "(0028,1050)",
    "WindowWidth": "(0028,1051)",
    "TransferSyntaxUID": "(0002,0010)",
}


# Video and referenced-pixel syntaxes: a still-image classifier has no frame to take.
_VIDEO_OR_REFERENCED = re.compile(r"^1\.2\.840\.10008\.1\.2\.4\.(10[0-8]|9[45])$")


@dataclass(frozen=True)
class DicomInfo:
    """What a DICOM file was, for the doctor: pixel-module facts only, nothing personal."""

    modality: str | None  # e.g. "CT", "MR", "CR"
    photometric: str  # PhotometricInterpretation as stored
    bits_stored: int
    signed: bool
    frames: int
    transfer_syntax: str  # its name, e.g. "Explicit VR Little Endian"
    window: str  # how values became 0..255, e.g. "file window C=40 W=400"


def is_dicom(data: bytes, name: str | None = None) -> bool:
    """A DICOM file by its ``DICM`` marker, or by a DICOM file name ending."""
    if data[_MARKER_AT : _MARKER_AT + 4] == b"DICM":
        return True
    return name is not None and _ending(name) in DICOM_EXTENSIONS


def _ending(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return "." + base.rsplit(".", 1)[-1].lower() if "." in base else ""


def decode_dicom(
    data: bytes, label: str, *, window: str, frame: int | None, max_pixels: int
) -> tuple[np.ndarray, DicomInfo]:
    """One frame of a DICOM file as uint8 (H, W) gray or (H, W, 3) RGB.

    ``frame`` None is the middle frame. Raises ImageDecodeError naming ``label`` and the
    tag at fault for anything unusable."""
    pydicom = _pydicom(label)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as error:  # pydicom raises many types for malformed headers
        raise ImageDecodeError(
            label, f"not a readable DICOM file ({type(error).__name__})"
        ) from None
    try:
        return _decode(ds, label, window, frame, max_pixels)
    except ImageDecodeError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
        raise
    except BaseException as error:  # Rust decoders panic (pyo3's PanicException) on bad data
        raise ImageDecodeError(label, _failure(error, ds)) from None


def _pydicom(label: str) -> Any:
    try:
        import pydicom
        import pydicom.pixels  # noqa: F401
    except ImportError:
        raise ImageDecodeError(
            label,
            "a DICOM file, and pydicom is not installed: pip install 'headstart[dicom]'",
        ) from None
    return pydicom


def _decode(
    ds: Any, label: str, window: str, frame: int | None, max_pixels: int
) -> tuple[np.ndarray, DicomInfo]:
    _refuse_non_images(ds, label)
    syntax = _transfer_syntax(ds, label)
    rows, columns = _positive(ds, "Rows", label), _positive(ds, "Columns", label)
    refused = too_many_pixels(columns, rows, max_pixels, kind="DICOM image")
    if refused is not None:
        raise ImageDecodeError(label, refused)
    frames = _frames(ds, label)
    index = frames // 2 if frame is None else frame
    if not 0 <= index < frames:
        raise ImageDecodeError(label, f"has no frame {index}: it has {frames} (NumberOfFrames)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if not photometric:
        raise ImageDecodeError(label, _missing("PhotometricInterpretation"))
    if not syntax.is_compressed:
        _check_length(ds, label, rows, columns, frames)
    import pydicom.pixels as pixels

    stored = pixels.pixel_array(ds, index=index if frames > 1 else None)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        gray, described = _window(stored, ds, label, window)
        if photometric == "MONOCHROME1":
            gray = 1.0 - gray
        picture = np.rint(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        picture, described = _colour(stored, ds, label, photometric)
    info = DicomInfo(
        modality=_modality(ds),
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0),
        signed=int(ds.get("PixelRepresentation", 0) or 0) == 1,
        frames=frames,
        transfer_syntax=str(syntax.name),
        window=described,
    )
    return picture, info


def _refuse_non_images(ds: Any, label: str) -> None:
    sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if sop_class == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise ImageDecodeError(label, "is a DICOMDIR (an index of other DICOM files), not an image")
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        kind = f"only {other[0]}, which headstart does not read" if other else "no pixel data"
        raise ImageDecodeError(
            label,
            f"DICOM file with {kind} {_PIXEL_DATA} (a report, structured data or "
            "presentation state, not an image)",
        )


def _transfer_syntax(ds: Any, label: str) -> Any:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(getattr(meta, "TransferSyntaxUID", "") or ImplicitVRLittleEndian))
    named = f"transfer syntax {syntax.name} ({syntax}) {_TAGS['TransferSyntaxUID']}"
    if _VIDEO_OR_REFERENCED.match(str(syntax)):
        raise ImageDecodeError(label, f"{named} is video or referenced pixel data; not read")
    if not syntax.is_transfer_syntax:
        raise ImageDecodeError(label, f"{named} is not supported: not a transfer syntax known")
    if not syntax.is_compressed:
        return syntax
    decoder = get_decoder(syntax)
    if decoder is None:
        raise ImageDecodeError(label, f"{named} is not supported: no decoder for it exists")
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise ImageDecodeError(
            label,
            f"{named} needs a decoder that is not installed ({needs}); "
            "pip install 'headstart[dicom]' installs pylibjpeg and its plugins",
        )
    return syntax


def _missing(keyword: str) -> str:
    return f"DICOM attribute {keyword} {_TAGS[keyword]} is missing"


def _positive(ds: Any, keyword: str, label: str) -> int:
    value = ds.get(keyword)
    if value is None:
        raise ImageDecodeError(label, _missing(keyword))
    if not isinstance(value, int) or value <= 0:
        raise ImageDecodeError(label, f"DICOM {keyword} {_TAGS[keyword]} is {value!r}, not > 0")
    return int(value)


def _frames(ds: Any, label: str) -> int:
    value = ds.get("NumberOfFrames", 1)
    try:
        frames = int(value) if value not in (None, "") else 1
    except (TypeError, ValueError):
        raise ImageDecodeError(
            label, f"DICOM NumberOfFrames {_TAGS['NumberOfFrames']} is {str(value)!r}, not a count"
        ) from None
    if frames < 1:
        raise ImageDecodeError(label, f"DICOM NumberOfFrames {_TAGS['NumberOfFrames']} is {frames}")
    return frames


def _check_length(ds: Any, label: str, rows: int, columns: int, frames: int) -> None:
    """A truncated native pixel buffer is named as such, before the decoder sees it."""
    bits = _positive(ds, "BitsAllocated", label)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples == 3 and photometric == "YBR_FULL_422":  # chroma stored at half width
        samples = 2
    expected = math.ceil(rows * columns * samples * frames * bits / 8)
    found = len(ds.PixelData)
    if found < expected:
        raise ImageDecodeError(
            label,
            f"truncated pixel data {_PIXEL_DATA}: {found:,} bytes where {columns}x{rows}, "
            f"{samples} sample(s) of {bits} bits, {frames} frame(s) need {expected:,}",
        )


def _modality(ds: Any) -> str | None:
    value = str(ds.get("Modality", "") or "").strip()
    return value if re.fullmatch(r"[A-Z0-9]{1,16}", value) else None


def _window(stored: np.ndarray, ds: Any, label: str, rule: str) -> tuple[np.ndarray, str]:
    """Modality LUT, then the window ``rule``: values in 0..1 and how they were mapped."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    values = apply_modality_lut(stored, ds).astype(np.float64)
    if rule in WINDOW_PRESETS:
        center, width = WINDOW_PRESETS[rule]
        return _linear(values, center, width, "LINEAR"), f"preset {rule} C={center:g} W={width:g}"
    if rule not in ("file", "none"):
        center, width = center_width(rule) or (0.0, 1.0)
        return _linear(values, center, width, "LINEAR"), f"given C={center:g} W={width:g}"
    if rule == "file" and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds, "WindowCenter", label), _first(ds, "WindowWidth", label)
        if width < 1:
            raise ImageDecodeError(
                label,
                f"window width of {width:g} in WindowWidth {_TAGS['WindowWidth']} (it must be "
                ">= 1); choose a window with DecodeOptions.dicom_window: 'CENTER,WIDTH', a preset "
                "or 'none'",
            )
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        shown = f"file window C={center:g} W={width:g}"
        return _linear(values, center, width, function), shown
    if rule == "file" and "VOILUTSequence" in ds:
        lut = ds.VOILUTSequence[0]
        entries, first, bits = (int(v) for v in lut.LUTDescriptor)
        # The LUT is indexed by the Modality LUT's output: round it (a rescale may give
        # fractions, which pydicom would index wrongly) and keep it inside the table.
        inputs = np.clip(np.rint(values), first, first + (entries or 2**16) - 1)
        mapped = apply_voi(inputs.astype(np.int64), ds, index=0)
        return np.asarray(mapped, np.float64) / float(2**bits - 1), "file VOI LUT"
    low, high = _full_range(ds)
    spread = (values - low) / (high - low) if high > low else np.zeros_like(values)
    why = "none: full range" if rule == "none" else "no window in the file: full range"
    return spread, f"{why} of {int(ds.get('BitsStored', 0) or 0)} stored bits"


def _first(ds: Any, keyword: str, label: str) -> float:
    from pydicom.multival import MultiValue

    value = ds.get(keyword)
    if isinstance(value, MultiValue | list | tuple):  # several windows: the first
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ImageDecodeError(
            label, f"DICOM {keyword} {_TAGS[keyword]} is {str(value)[:32]!r}, not a number"
        ) from None
    if not math.isfinite(number):
        raise ImageDecodeError(label, f"DICOM {keyword} {_TAGS[keyword]} is {number}")
    return number


def _linear(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """The DICOM window functions (PS3.3 C.11.2.1.2) onto 0..1."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width <= 1:  # LINEAR with width 1: a threshold at center - 0.5
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _full_range(ds: Any) -> tuple[float, float]:
    """The lowest and highest value the stored bits can hold, through the Modality LUT."""
    from pydicom.pixels import apply_modality_lut

    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        ends = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)
    else:
        ends = np.array([0, 2**bits - 1], dtype=np.int64)
    if "ModalityLUTSequence" in ds:
        ends = np.clip(ends, 0, None).astype(np.uint16)
    mapped = np.asarray(apply_modality_lut(ends, ds), dtype=np.float64)
    return float(mapped.min()), float(mapped.max())


def _colour(stored: np.ndarray, ds: Any, label: str, photometric: str) -> tuple[np.ndarray, str]:
    """RGB (pydicom converts YBR to RGB while decoding) and palette colour, scaled to 8 bits."""
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        rgb = np.asarray(apply_color_lut(stored, ds))
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _to_8_bits(rgb, bits), f"palette colour ({bits}-bit table)"
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"):
        if stored.ndim != 3 or stored.shape[-1] != 3:
            raise ImageDecodeError(
                label, f"{photometric} pixel data has shape {stored.shape}, not (rows, columns, 3)"
            )
        bits = int(ds.get("BitsStored", 8) or 8)
        return _to_8_bits(stored, bits), f"{photometric} colour, {bits} bits"
    raise ImageDecodeError(
        label,
        f"PhotometricInterpretation {_TAGS['PhotometricInterpretation']} {photometric!r} is "
        "not supported (MONOCHROME1, MONOCHROME2, RGB, YBR_* and PALETTE COLOR are)",
    )


def _to_8_bits(values: np.ndarray, bits: int) -> np.ndarray:
    if bits <= 8 and values.dtype == np.uint8:
        return values
    top = float(2 ** min(bits, 32) - 1)
    return np.rint(np.clip(values.astype(np.float64) / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def _failure(error: BaseException, ds: Any) -> str:
    """A decoder's complaint, kept only after every identifying value in ``ds`` is removed
    (or dropped whole when the damaged file cannot even be searched for them)."""
    try:
        message = scrub(" ".join(str(error).split()) or "no message", ds)[:300]
    except Exception:
        message = "the damaged file's message is not shown"
    if "less than expected" in message or "truncated" in message.lower():
        return f"truncated pixel data {_PIXEL_DATA} ({message})"
    return f"cannot decode DICOM pixel data {_PIXEL_DATA} ({type(error).__name__}: {message})"
