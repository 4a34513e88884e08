"""Feature similarity for label issues: near-duplicate pairs, and how far each image is
from every other one (an outlier's nearest neighbours are far). Cosine similarity on
centred features, computed a block of rows at a time (bounded memory)."""

from __future__ import annotations

import numpy as np

__all__ = ["near_duplicates", "neighbour_similarity"]


def _unit_rows(features: np.ndarray) -> np.ndarray:
    """Centred, then unit length: cosine similarity is then a dot product. Centring keeps
    the part every image shares (post-ReLU features are all positive) from making every
    pair look alike."""
    x = np.asarray(features, dtype=np.float32)
    x = x - x.mean(axis=0)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _blocks(unit: np.ndarray, size: int = 1024):
    """(start, similarities of rows start..start+size to every row), itself set to -inf."""
    for start in range(0, len(unit), size):
        sims = unit[start : start + size] @ unit.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf
        yield start, sims


def near_duplicates(features: np.ndarray, threshold: float = 0.95) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for every pair i < j at or above ``threshold``, most similar first."""
    unit = _unit_rows(features)
    pairs = []
    for start, sims in _blocks(unit):
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows, cols, strict=True):
            if start + r < c:
                pairs.append((int(start + r), int(c), float(sims[r, c])))
    pairs.sort(key=lambda pair: (-pair[2], pair[0], pair[1]))
    return pairs


def neighbour_similarity(features: np.ndarray, k: int = 5) -> np.ndarray:
    """(N,) each image's mean cosine similarity to its ``k`` nearest other images: low for
    an image that resembles nothing else in the set."""
    unit = _unit_rows(features)
    k = max(1, min(k, len(unit) - 1))
    out = np.empty(len(unit), dtype=np.float64)
    for start, sims in _blocks(unit):
        nearest = -np.partition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + len(sims)] = nearest.mean(axis=1)
    return out
