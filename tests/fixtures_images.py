"""Builders for test images, good and broken, each written into a given path with Pillow.

Every builder is tiny (a few KB at most) so whole folders of them build in milliseconds.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def solid_png(
    path: Path, colour: tuple[int, int, int] = RED, size: tuple[int, int] = (8, 6)
) -> Path:
    Image.new("RGB", size, colour).save(path, format="PNG")
    return path


def noisy_jpeg_bytes(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    """A JPEG full of noise, so its entropy-coded data is long enough to cut in half."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A 1-bit grayscale PNG that claims ``width`` x ``height`` but holds almost no data.

    This is what a decompression bomb looks like to a header parser, at a few dozen
    bytes on disk and without ever allocating the pixels in the test.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


# One clearly different colour per class, so a model can separate them in a step or two.
CLASS_COLOURS = [(220, 40, 40), (40, 180, 60), (40, 60, 220), (230, 200, 40), (150, 60, 200)]


def build_image_folder(
    root: Path, counts: dict[str, int], *, size: tuple[int, int] = (16, 16)
) -> Path:
    """Write ``counts[name]`` small PNGs into ``root/name/`` and return ``root``.

    Images of one class share a colour and differ by a few levels of brightness, so
    every file has distinct bytes (distinct content hashes).
    """
    for index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        red, green, blue = CLASS_COLOURS[index % len(CLASS_COLOURS)]
        for item in range(count):
            colour = (red, green, min(255, blue + item))
            Image.new("RGB", size, colour).save(folder / f"{name}_{item:03d}.png")
    return root


# ----------------------------------------------------------------------- broken files


def colour_folder(root: Path, per_class: int = 10, broken: bool = False) -> Path:
    """red/, green/ and blue/ folders of 24x24 PNGs, each class bright in its own channel
    (easy to learn); with ``broken``, an HTML page saved as red/not-an-image.jpg."""
    rng = np.random.default_rng(0)
    for label, channel in (("red", 0), ("green", 1), ("blue", 2)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(24, 24, 3), dtype=np.uint8)
            pixels[:, :, channel] += 150
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    if broken:
        (root / "red" / "not-an-image.jpg").write_text("<html>oops</html>")
    return root


def noise_folder(
    root: Path,
    classes: tuple[str, ...] = ("a", "b"),
    per_class: int = 4,
    *,
    seed: int = 0,
    high: int = 256,
) -> Path:
    """One folder per class of 16x16 random-noise PNGs (seeded): distinct, readable
    images for tests where what they show does not matter."""
    rng = np.random.default_rng(seed)
    for label in classes:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, high, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def truncated_jpeg(path: Path) -> Path:
    data = noisy_jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def zero_byte_jpeg(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def html_as_jpeg(path: Path) -> Path:
    path.write_bytes(b"<!DOCTYPE html>\n<html><body>Access denied</body></html>\n")
    return path


def bomb_png(path: Path) -> Path:
    """20000 x 20000 = 400 million pixels: above twice Pillow's limit, so Pillow itself errors."""
    path.write_bytes(png_header_only(20_000, 20_000))
    return path


def warning_bomb_png(path: Path) -> Path:
    """10000 x 10000 = 100 million pixels: above Pillow's limit but below twice it.

    Pillow only *warns* for these; headstart must still skip the file and not let the
    warning pass.
    """
    path.write_bytes(png_header_only(10_000, 10_000))
    return path


BROKEN_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "truncated.jpg": truncated_jpeg,
    "empty.jpg": zero_byte_jpeg,
    "page.jpg": html_as_jpeg,
    "bomb.png": bomb_png,
    "warning_bomb.png": warning_bomb_png,
}


# ----------------------------------------------------------------------- unusual but good


def cmyk_jpeg(path: Path) -> Path:
    Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(path, format="JPEG", quality=95)  # red
    return path


def palette_with_transparency_png(path: Path) -> Path:
    """Left half palette index 0 (transparent), right half index 1 (opaque blue)."""
    image = Image.new("P", (8, 4), 0)
    image.putpalette([0, 255, 0] + list(BLUE) + [0, 0, 0] * 254)
    image.paste(1, (4, 0, 8, 4))
    image.save(path, format="PNG", transparency=0)
    return path


def rgba_png(path: Path) -> Path:
    """Red at alpha 128: on white it must come out pink, not red or black."""
    Image.new("RGBA", (8, 6), (255, 0, 0, 128)).save(path, format="PNG")
    return path


def gray16_png(path: Path, value: int = 32768) -> Path:
    """16-bit grayscale at mid-grey; plain convert('RGB') would clip it to white."""
    Image.new("I;16", (8, 6), value).save(path, format="PNG")
    return path


def one_bit_png(path: Path) -> Path:
    image = Image.new("1", (8, 6), 0)
    image.paste(1, (4, 0, 8, 6))  # right half white
    image.save(path, format="PNG")
    return path


def animated_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (8, 6), colour) for colour in (RED, (0, 255, 0), BLUE)]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return path


def la_png(path: Path) -> Path:
    """Black at alpha 0 everywhere: composited on white it is white."""
    Image.new("LA", (8, 6), (0, 0)).save(path, format="PNG")
    return path


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 40x20 (landscape as stored) blue JPEG with a red top-left corner block.

    Orientation 6 means "rotate 90 degrees clockwise to display": the picture shows
    20x40 (portrait) and the red block lands in the top-right corner.
    """
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format="JPEG", quality=95, exif=exif)
    return path


UNUSUAL_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "cmyk.jpg": cmyk_jpeg,
    "palette_transparent.png": palette_with_transparency_png,
    "rgba.png": rgba_png,
    "gray16.png": gray16_png,
    "one_bit.png": one_bit_png,
    "animated.gif": animated_gif,
    "la.png": la_png,
    "rotated.jpg": exif_rotated_jpeg,
}


def write_all(folder: Path, builders: dict[str, Callable[[Path], Path]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [build(folder / name) for name, build in builders.items()]


def colour_data(per_class: int = 10, seed: int = 0, size: int = 20):
    """In-memory dataset: three classes ("red", "green", "blue") told apart by their
    dominant colour channel over random noise, so even a random network separates them."""
    from headstart.data.arrays import from_arrays

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    images = rng.integers(0, 60, size=(len(labels), size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, :, :, label] += 150
    return from_arrays(images, [("red", "green", "blue")[k] for k in labels])


def tiny_weights_file(folder: Path, seed: int, model: str = "test_efficientnet") -> str:
    """A seeded random initialisation of ``model`` saved as safetensors; returns its path."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    path = Path(folder) / "tiny.safetensors"
    state = timm.create_model(model).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)
