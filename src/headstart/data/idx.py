"""IDX files (the MNIST / Fashion-MNIST format), the full Fashion-MNIST, and the bundled
sample that lets the demo and the tests run offline."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from headstart._internal.files import MB, FileRefused, describe_bytes, read_capped
from headstart.data.arrays import dataset_from_arrays, label_indices
from headstart.data.dataset import ImageDataset
from headstart.errors import DataError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "find_idx_pair",
    "load_fashion_mnist",
    "load_idx",
    "load_sample",
]

# The largest IDX file read (60,000 28x28 images are 47 MB raw; this allows ~5 million).
IDX_MAX_BYTES = 4096 * MB

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def _parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Parse an IDX file (MNIST's format), gzipped or not, into a uint8 array."""
    if data[:2] == b"\x1f\x8b":  # gzip magic; file names are not trusted
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{name}: corrupt gzip data ({error})") from None
    expected_magic = f"0000080{ndim}"
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(
            f"{name}: not an IDX file (magic number {data[:4].hex() or 'missing'}, "
            f"expected {expected_magic})"
        )
    if data[2] != 0x08:
        raise DataError(
            f"{name}: IDX element type 0x{data[2]:02x} is not supported; expected 0x08 "
            "(unsigned byte)"
        )
    if data[3] != ndim:
        layout = "count, rows, columns" if ndim == 3 else "count"
        raise DataError(f"{name}: IDX file has {data[3]} dimensions; expected {ndim} ({layout})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{name}: IDX header is truncated ({len(data)} of {header_size} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected, found = math.prod(shape), len(data) - header_size
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{name}: IDX data {problem}: the header promises shape {shape} = {expected} "
            f"bytes, found {found}"
        )
    if shape[0] == 0 or (ndim == 3 and 0 in shape[1:]):
        raise DataError(f"{name}: IDX file holds no images (shape {shape})")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _dataset_from_idx(
    images_data: bytes,
    labels_data: bytes,
    *,
    images_name: str,
    labels_name: str,
    classes: Sequence[str] | None,
) -> ImageDataset:
    images = _parse_idx(images_data, images_name, ndim=3)
    labels = _parse_idx(labels_data, labels_name, ndim=1)
    if len(images) != len(labels):
        raise DataError(
            f"{images_name} holds {len(images)} images but {labels_name} holds {len(labels)} labels"
        )
    indices, names = label_indices(labels.astype(np.int64), classes, labels_name)
    return dataset_from_arrays(images, indices, names, source=images_name)


def _read_data_file(path: str | Path) -> bytes:
    over = f"the {describe_bytes(IDX_MAX_BYTES)} cap for an IDX file"
    try:
        return read_capped(path, IDX_MAX_BYTES, over=over)
    except FileRefused as refused:
        raise DataError(f"{path}: not read: {refused.reason}") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read file ({error.strerror or error})") from None


def load_idx(
    images_path: str | Path,
    labels_path: str | Path,
    *,
    classes: Sequence[str] | None = None,
) -> ImageDataset:
    """Load an MNIST-style pair of IDX files (gzipped or not); images stay in memory as uint8."""
    return _dataset_from_idx(
        _read_data_file(images_path),
        _read_data_file(labels_path),
        images_name=str(images_path),
        labels_name=str(labels_path),
        classes=classes,
    )


def find_idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The images and labels files of one split ("train" or "t10k"), if both exist."""
    found = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        candidates = [  # the original names, and the "train-images.idx3-ubyte" variant
            folder / f"{split}-{kind}{dot}idx{ndim}-ubyte{gz}"
            for dot in ("-", ".")
            for gz in ("", ".gz")
        ]
        existing = [candidate for candidate in candidates if candidate.is_file()]
        if not existing:
            return None
        found.append(existing[0])
    return found[0], found[1]


def load_fashion_mnist(
    root: str | Path = DEFAULT_FASHION_MNIST_DIR,
) -> tuple[ImageDataset, ImageDataset]:
    """The full Fashion-MNIST (60,000 train and 10,000 test images) from its four IDX files."""
    folder = Path(root)
    train, test = find_idx_pair(folder, "train"), find_idx_pair(folder, "t10k")
    if train is None or test is None:
        raise DataError(
            f"Fashion-MNIST not found in {folder}: expected train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz]. Install it with `apt-get install "
            "dataset-fashion-mnist`, or pass a folder holding the 4 IDX files."
        )
    return (
        load_idx(*train, classes=FASHION_MNIST_CLASSES),
        load_idx(*test, classes=FASHION_MNIST_CLASSES),
    )


def load_sample() -> tuple[ImageDataset, ImageDataset]:
    """The bundled Fashion-MNIST sample: 100 train and 100 test images per class.

    Small enough to ship inside the package, so a demo and the tests run offline.
    """
    folder = resources.files("headstart") / "sample_data"

    def load(split: str) -> ImageDataset:
        images, labels = f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"
        return _dataset_from_idx(
            (folder / images).read_bytes(),
            (folder / labels).read_bytes(),
            images_name=f"headstart/sample_data/{images}",
            labels_name=f"headstart/sample_data/{labels}",
            classes=FASHION_MNIST_CLASSES,
        )

    return load("train"), load("t10k")
