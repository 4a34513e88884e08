"""Build headstart's bundled Fashion-MNIST sample (src/headstart/sample_data/).

Takes 100 images per class from the Fashion-MNIST training set and 100 per class
from its test set, chosen with a fixed seed, and writes them as gzipped IDX files
in the dataset's own layout. Re-running it produces byte-identical files (gzip
mtime 0), so the committed sample can always be checked against its source.

    python scripts/make_sample.py [--source /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
from pathlib import Path

import numpy as np

PER_CLASS = 100
SEED = 20240501
NUM_CLASSES = 10
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "src" / "headstart" / "sample_data"


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped uint8 IDX file into an array of its declared shape."""
    data = gzip.decompress(path.read_bytes())
    if data[:3] != b"\0\0\x08":
        raise SystemExit(f"{path}: not a uint8 IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as IDX: magic 00 00 08 <ndim>, big-endian dims, data."""
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def choose(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PER_CLASS indices of every class, kept in the source's order (classes interleaved)."""
    picked = [
        rng.choice(np.flatnonzero(labels == label), size=PER_CLASS, replace=False)
        for label in range(NUM_CLASSES)
    ]
    return np.sort(np.concatenate(picked))


def write_gzip(path: Path, payload: bytes) -> None:
    # mtime=0 and no file name in the header: identical input gives identical bytes.
    path.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        images = read_idx(args.source / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{split}-labels-idx1-ubyte.gz")
        chosen = choose(labels, rng)
        write_gzip(args.out / f"{split}-images-idx3-ubyte.gz", idx_bytes(images[chosen]))
        write_gzip(args.out / f"{split}-labels-idx1-ubyte.gz", idx_bytes(labels[chosen]))
        print(f"{split}: {len(chosen)} of {len(labels)} images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
