"""Content hashes: of files (the weights a model was built from) and of arrays (images
held in memory), so equal hashes mean equal bytes."""

from __future__ import annotations

import hashlib
import os

import numpy as np


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, read in chunks by ``hashlib.file_digest``."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes: equal only for identical images."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
