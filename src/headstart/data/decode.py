"""Turn one image file (or one array) into an RGB picture, or say exactly why not.

Everything that reads pixels in headstart goes through :func:`decode_image`, so
training, prediction and serving see the same orientation, the same colour
conversion and the same size limits. Any failure on bad bytes becomes an
:class:`~headstart.errors.ImageDecodeError` that names the file and the reason;
no other exception type escapes for a malformed file.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError, features

from headstart._internal.files import MB, FileRefused, describe_bytes, read_capped
from headstart._internal.validation import invalid
from headstart.data.bounds import too_many_pixels
from headstart.data.dicom import DICOM_EXTENSIONS, DicomInfo, check_window, decode_dicom, is_dicom
from headstart.data.tiff import is_tiff, tiff_frame
from headstart.errors import DataError, ImageDecodeError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DecodeInfo",
    "DecodeOptions",
    "decode_array",
    "decode_image",
    "frame_source",
    "split_frame",
]

# JPEG 2000's endings, as Pillow registers them; images wherever Pillow has the codec.
_JPEG_2000 = frozenset({".jp2", ".j2k", ".jpc", ".jpf", ".jpx", ".j2c"})

#: File name endings treated as images when scanning folders (compared lower-case).
IMAGE_EXTENSIONS = (
    frozenset(
        {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
    )
    | (_JPEG_2000 if features.check_codec("jpg_2000") else frozenset())
    | DICOM_EXTENSIONS
)

#: How multi-frame DICOM files and multi-page TIFF stacks are read: the middle frame, or
#: every frame as an image of its own (of the file's label, kept on one side of a split).
FRAME_RULES = ("middle", "all")

# One frame of a file, as a source: "scan.dcm#frame=3" (frames counted from 0).
_FRAME_SUFFIX = re.compile(r"^(?P<path>.+)#frame=(?P<frame>\d{1,6})$", re.DOTALL)

# Pillow's own default for Image.MAX_IMAGE_PIXELS. Written out rather than read from
# Pillow's mutable global, so a decode result never depends on what other code did
# to that global before headstart was imported.
_PILLOW_DEFAULT_MAX_PIXELS = 89_478_485

# The most bytes an image file of N pixels is read at: 8 a pixel (16-bit RGBA stored raw,
# the largest Pillow decodes) and room for metadata (EXIF, ICC profiles, thumbnails).
# A larger file is refused before it is read: it cannot be an image within the limit.
_BYTES_PER_PIXEL = 8
_METADATA_ROOM = 64 * MB

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class DecodeOptions:
    """Limits and colour choices applied to every decoded image.

    Saved with a model so prediction decodes exactly as training did.
    """

    max_pixels: int = _PILLOW_DEFAULT_MAX_PIXELS  # width*height above this: skipped as a bomb
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


_DEFAULT_OPTIONS = DecodeOptions()

# Pillow reports large images through a process-wide warning and a process-wide
# limit. `warnings.catch_warnings` is not thread-safe, so the Pillow calls that
# may emit the warning (open, frame counting, load) run one at a time under this
# lock; rotation, colour conversion and downscaling run outside it.
_PILLOW_LIMIT_LOCK = threading.Lock()


def decode_image(
    source: str | Path | bytes,
    options: DecodeOptions = _DEFAULT_OPTIONS,
    *,
    name: str | None = None,
) -> tuple[Image.Image, DecodeInfo]:
    """Decode a file path or raw bytes into a fully loaded RGB image.

    A path may name one frame of a stack, ``scan.dcm#frame=3`` (`frame_source`).
    Raises ImageDecodeError naming ``name`` (or the path) for any unusable input:
    unreadable or missing file, empty file, not an image, truncated data, or an
    image above ``options.max_pixels``.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        label = name if name is not None else "<bytes>"
        return decode_bytes(bytes(source), options, label)
    label = name if name is not None else str(source)
    path, frame = split_frame(source)
    data = read_image_bytes(path, label, options.max_pixels)
    return decode_bytes(data, options, label, frame=frame)


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


def image_byte_cap(max_pixels: int) -> int:
    """The largest file read as an image of at most ``max_pixels`` pixels."""
    return _BYTES_PER_PIXEL * max_pixels + _METADATA_ROOM


def read_image_bytes(
    path: str | Path, label: str, max_pixels: int = _PILLOW_DEFAULT_MAX_PIXELS
) -> bytes:
    """Read a whole file, turning every OS-level failure into an ImageDecodeError.

    Only a regular file is read (a FIFO would wait forever, ``/dev/zero`` never end), and
    only up to `image_byte_cap` of ``max_pixels``: a larger file is skipped unread."""
    cap = image_byte_cap(max_pixels)
    over = (
        f"the {describe_bytes(cap)} cap for an image of at most {max_pixels:,} pixels "
        f"({_BYTES_PER_PIXEL} bytes a pixel and {describe_bytes(_METADATA_ROOM)} of metadata); "
        "raise DecodeOptions.max_pixels to read it"
    )
    try:
        return read_capped(path, cap, over=over)
    except FileRefused as refused:
        raise ImageDecodeError(label, refused.reason) from None
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(label, "is a directory, not an image file") from None
    except OSError as error:
        raise ImageDecodeError(label, f"cannot read file: {error.strerror or error}") from None


def decode_bytes(
    data: bytes, options: DecodeOptions, label: str, *, frame: int | None = None
) -> tuple[Image.Image, DecodeInfo]:
    """Decode bytes already in memory (the loaders hash the same bytes they decode).

    ``frame`` picks a frame of a DICOM or TIFF stack; None follows ``options.frames``
    (the middle one; the first of an animation)."""
    if len(data) == 0:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    if is_dicom(data, label):
        return _decode_dicom(data, options, label, frame)
    try:
        return _decode(data, options, label, frame)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(label, _bomb_reason(str(error), options.max_pixels)) from None
    except UnidentifiedImageError:
        if is_tiff(data):
            return _decode_tiff(data, options, label, frame)
        raise ImageDecodeError(label, _unidentified_reason(data)) from None
    except Exception as error:
        # Pillow's format plugins raise a wide, undocumented range of types for
        # malformed input (OSError, ValueError, SyntaxError, struct.error, EOFError,
        # IndexError, ZeroDivisionError, ...). All of them mean "this file is bad";
        # the type name stays in the reason so a genuine bug is still visible.
        if is_tiff(data):  # a TIFF Pillow cannot read (16-bit RGB, float64, ...)
            return _decode_tiff(data, options, label, frame)
        raise ImageDecodeError(label, _failure_reason(error)) from None


def _decode(
    data: bytes, options: DecodeOptions, label: str, frame: int | None
) -> tuple[Image.Image, DecodeInfo]:
    with _pillow_limit(options.max_pixels):
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        # Checked before load(): a bomb is refused before its pixels are allocated.
        refused = too_many_pixels(width, height, options.max_pixels)
        if refused is not None:
            raise ImageDecodeError(label, refused)
        frames = int(getattr(image, "n_frames", 1))
        stack = image.format == "TIFF" and frames > 1
        index = _frame_index(frame, frames, stack, label)
        if frames > 1:
            image.seek(index)
        original_mode, original_size = image.mode, image.size
        downscaled = _draft_jpeg(image, options.max_side)
        image.load()

    rgb, rotated, conversion, shrunk = _normalise(image, options)
    downscaled = downscaled or shrunk
    info = DecodeInfo(
        original_mode=original_mode,
        original_size=original_size,
        rotated=rotated,
        conversion=conversion,
        frames=frames,
        downscaled=downscaled,
        frame=index,
        stack=stack,
    )
    return rgb, info


def _frame_index(frame: int | None, frames: int, stack: bool, label: str) -> int:
    """The frame to decode: the one asked for, else the middle of a stack, else the first."""
    if frame is None:
        return frames // 2 if stack else 0
    if not 0 <= frame < frames:
        raise ImageDecodeError(label, f"has no frame {frame}: it has {frames}")
    return frame


def _decode_dicom(
    data: bytes, options: DecodeOptions, label: str, frame: int | None
) -> tuple[Image.Image, DecodeInfo]:
    pixels, dicom = decode_dicom(
        data, label, window=options.dicom_window, frame=frame, max_pixels=options.max_pixels
    )
    index = dicom.frames // 2 if frame is None else frame
    return _from_array(pixels, options, dicom.frames, index, f"DICOM {dicom.photometric}", dicom)


def _decode_tiff(
    data: bytes, options: DecodeOptions, label: str, frame: int | None
) -> tuple[Image.Image, DecodeInfo]:
    raw, frames, index, mode = tiff_frame(data, label, frame, options.max_pixels)
    pixels, scaled = _array_to_8_bits(raw)
    return _from_array(pixels, options, frames, index, f"TIFF {mode}{scaled}", None)


def _from_array(
    pixels: np.ndarray,
    options: DecodeOptions,
    frames: int,
    index: int,
    mode: str,
    dicom: DicomInfo | None,
) -> tuple[Image.Image, DecodeInfo]:
    """An 8-bit gray or RGB array decoded by pydicom or tifffile, as Pillow's images are."""
    height, width = pixels.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(pixels))
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    downscaled = max(rgb.size) > options.max_side
    if downscaled:
        rgb.thumbnail((options.max_side, options.max_side), Image.Resampling.LANCZOS)
    conversion = f"{mode}->RGB" if dicom is None else f"{mode}->RGB ({dicom.window})"
    info = DecodeInfo(
        original_mode=mode,
        original_size=(int(width), int(height)),
        rotated=False,
        conversion=conversion,
        frames=frames,
        downscaled=downscaled,
        frame=index,
        dicom=dicom,
        stack=True,
    )
    return rgb, info


def _array_to_8_bits(raw: np.ndarray) -> tuple[np.ndarray, str]:
    """tifffile's arrays by the rules Pillow's modes follow in `_to_rgb`: 16 bits /257,
    0..1 floats x255, anything else min-max; (H, W) or (H, W, 3) uint8 out."""
    if raw.ndim == 3 and raw.shape[2] == 4:
        raw = raw[:, :, :3]  # TIFF extra samples: the colour without its alpha
    if raw.dtype == np.uint8:
        return raw, ""
    if raw.dtype == np.bool_:
        return raw.astype(np.uint8) * 255, " (1-bit)"
    pixels = raw.astype(np.float64)
    if np.issubdtype(raw.dtype, np.floating):
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
        if pixels.min() >= 0.0 and pixels.max() <= 1.0:
            return _clip_8(pixels * 255.0), " (0..1 scaled)"
        return _clip_8(_stretch(pixels)), " (min-max scaled)"
    if pixels.min() >= 0 and pixels.max() <= 65535:
        return _clip_8(pixels / 257.0), " (16-bit scaled)"
    return _clip_8(_stretch(pixels)), " (min-max scaled)"


def _clip_8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _normalise(
    image: Image.Image, options: DecodeOptions
) -> tuple[Image.Image, bool, str | None, bool]:
    """EXIF orientation, explicit RGB conversion, bounded size: (rgb, rotated, conversion,
    downscaled). One path for files and for images handed over in memory."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    rotated = orientation in (2, 3, 4, 5, 6, 7, 8)
    if rotated:
        image = ImageOps.exif_transpose(image)
    rgb, conversion = _to_rgb(image, options.background)
    downscaled = False
    if max(rgb.size) > options.max_side:
        rgb = rgb.copy() if rgb is image else rgb
        rgb.thumbnail((options.max_side, options.max_side), Image.Resampling.LANCZOS)
        downscaled = True
    return rgb, rotated, conversion, downscaled


def normalise_image(image: Image.Image, options: DecodeOptions = _DEFAULT_OPTIONS) -> Image.Image:
    """An in-memory PIL image made ready exactly as a decoded file would be.

    Prediction on PIL images goes through here, so a transparent PNG or a sideways
    phone photo handed over in memory is treated as in training.
    """
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return _normalise(image, options)[0]


@contextlib.contextmanager
def _pillow_limit(max_pixels: int) -> Iterator[None]:
    """Make Pillow's bomb warning an error, and keep Pillow's limit from undercutting ours.

    Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that. With
    the warning turned into an error, every Pillow complaint becomes the skip;
    Pillow's limit is raised to ours for the duration when the caller allowed
    more, so an image we accept is never refused by Pillow's stricter default.
    """
    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        if saved is not None and saved < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _draft_jpeg(image: Image.Image, max_side: int) -> bool:
    """Let libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale; True if it did."""
    if image.format not in ("JPEG", "MPO") or max(image.size) <= max_side:  # MPO: camera JPEGs
        return False
    width, height = image.size
    scale = max_side / max(width, height)
    wanted = (max(1, round(width * scale)), max(1, round(height * scale)))
    before = image.size
    image.draft(None, wanted)  # never goes below `wanted`; thumbnail() finishes the job
    return image.size != before


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> tuple[Image.Image, str | None]:
    """Convert any Pillow mode to RGB explicitly; plain convert('RGB') clips 16-bit to white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image).astype(np.float64) / 257.0  # 0..65535 -> 0..255
        return _gray_to_rgb(pixels), f"{mode}->RGB (16-bit scaled)"
    if mode == "I":
        pixels = np.asarray(image).astype(np.float64)
        if pixels.min() >= 0 and pixels.max() <= 65535:
            # 16-bit data held in a 32-bit container (PGM with maxval > 255, some TIFFs).
            return _gray_to_rgb(pixels / 257.0), "I->RGB (16-bit scaled)"
        return _gray_to_rgb(_stretch(pixels)), "I->RGB (32-bit, min-max scaled)"
    if mode == "F":
        pixels = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0)
        finite = np.clip(pixels, -np.finfo(np.float32).max, np.finfo(np.float32).max)
        if finite.min() >= 0.0 and finite.max() <= 1.0:
            return _gray_to_rgb(finite * 255.0), "F->RGB (0..1 scaled)"
        return _gray_to_rgb(_stretch(finite)), "F->RGB (min-max scaled)"
    if image.has_transparency_data:
        described = mode if mode in _ALPHA_MODES else f"{mode}+transparency"
        rgba = image.convert("RGBA")
        composited = Image.new("RGB", rgba.size, background)
        composited.paste(rgba, mask=rgba.getchannel("A"))
        return composited, f"{described}->RGB (alpha on {_describe_colour(background)})"
    if mode == "RGB":
        return image, None
    return image.convert("RGB"), f"{mode}->RGB"


def _gray_to_rgb(pixels: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _stretch(pixels: np.ndarray) -> np.ndarray:
    """Map the value range linearly onto 0..255 (a constant image becomes black)."""
    low, high = float(pixels.min()), float(pixels.max())
    if high <= low:
        return np.zeros_like(pixels)
    return (pixels - low) * (255.0 / (high - low))


def _describe_colour(colour: tuple[int, int, int]) -> str:
    names = {(255, 255, 255): "white", (0, 0, 0): "black"}
    return names.get(colour, f"rgb{colour}")


def _bomb_reason(pillow_message: str, max_pixels: int) -> str:
    return (
        f"image is above the limit of {max_pixels:,} pixels (DecodeOptions.max_pixels); "
        f"skipped as a possible decompression bomb (Pillow: {pillow_message})"
    )


def _unidentified_reason(data: bytes) -> str:
    head = data[:64].lstrip()
    if head[:1] == b"<":
        looks_like = "it looks like HTML or XML, e.g. a web page saved under an image name"
    elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        looks_like = "it looks like plain text"
    else:
        looks_like = "the format is unknown or the header is corrupt"
    return f"not an image: Pillow cannot identify it ({looks_like}; starts with {data[:16]!r})"


def _failure_reason(error: Exception) -> str:
    message = str(error) or "no message"
    if "truncated" in message.lower():
        return f"truncated image data ({message})"
    return f"cannot decode image ({type(error).__name__}: {message})"


def decode_array(array: np.ndarray, name: str) -> Image.Image:
    """Turn one uint8 array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) into RGB.

    Four channels are read as RGBA and composited on white, like transparent files.
    """
    array = np.asarray(array)
    check_image_array(array, name)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    image = Image.fromarray(np.ascontiguousarray(array))
    if image.mode == "RGB":
        return image
    if image.mode == "RGBA":
        return _to_rgb(image, (255, 255, 255))[0]
    return image.convert("RGB")


def check_image_array(array: np.ndarray, name: str) -> None:
    """Raise DataError unless ``array`` is one uint8 image decode_array accepts."""
    if array.dtype != np.uint8:
        raise DataError(
            f"{name}: image array has dtype {array.dtype}; expected uint8 "
            "(scale floats to 0..255 and cast with .astype(np.uint8))"
        )
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not shape_ok or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(
            f"{name}: image array has shape {array.shape}; expected (H, W), (H, W, 1), "
            "(H, W, 3) or (H, W, 4) with H, W >= 1"
        )
