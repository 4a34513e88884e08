"""What both ways of ranking share: each training image decoded once for every
(backbone, size), and one open backbone per (backbone, size) whose features grow as
more of the training images are asked for.

Decoding once matters for folders of photos (a JPEG decode costs about as much as a
small network's forward pass); the resize to each candidate size still happens per
size, in the backbone's own preprocessing, so the features are bit-identical to those
of images decoded afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headstart.data.dataset import ImageDataset

__all__ = ["DecodedImages", "OpenPair"]

DECODED_BYTES = 2 << 30  # past this many bytes of decoded pixels, images decode per use


class DecodedImages:
    """The training images, each decoded on first use and kept (up to ``max_bytes``),
    so every (backbone, size) and every round of a ranking reads the same pixels."""

    def __init__(self, dataset: ImageDataset, max_bytes: int = DECODED_BYTES) -> None:
        self.dataset = dataset
        self.max_bytes = max_bytes
        self.decoded = 0  # images decoded so far (each at most once while they fit)
        self._arrays: dict[int, np.ndarray] = {}
        self._bytes = 0
        self._hashes = dataset.content_hashes()
        self._sizes = dataset.original_sizes()

    def subset(self, rows: Sequence[int]) -> ImageDataset:
        """``dataset.subset(rows)``, its images from memory: the same content hashes,
        decode options and labels, so the feature cache keys them as the originals."""
        rows = [int(r) for r in rows]
        for row in rows:
            if row not in self._arrays:
                pixels = np.asarray(self.dataset.image(row))
                self.decoded += 1
                if self._bytes + pixels.nbytes > self.max_bytes:
                    return self.dataset.subset(rows)  # too many to hold: decode per use
                self._arrays[row] = pixels
                self._bytes += pixels.nbytes
        return ImageDataset(
            classes=self.dataset.classes,
            labels=self.dataset.labels[rows],
            sources=[self.dataset.source(r) for r in rows],
            content_hashes=[self._hashes[r] for r in rows],
            report=self.dataset.report,
            options=self.dataset.options,
            arrays=[self._arrays[r] for r in rows],
            original_sizes=[self._sizes[r] for r in rows],
        )


@dataclass
class OpenPair:
    """One (backbone, size): its model, the candidates it serves, and the features of
    the training rows extracted so far (row order as asked)."""

    backbone: Any
    members: list[Any]  # its Candidates whose layers the model has
    layers: list[str]
    parameters: int
    latency_ms: float
    rows: list[int] = field(default_factory=list)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0  # extraction so far, this run
    from_cache: int = 0
    extracted: int = 0

    def grow(
        self,
        rows: Sequence[int],
        images: DecodedImages,
        cache: Any,
        *,
        device: str,
        batch_size: int,
        notice: Callable[[str], None],
    ) -> dict[str, np.ndarray]:
        """The features of ``rows`` (a prefix-extension of the rows had so far): only the
        new rows go to the cache or the backbone."""
        from headstart.features.cache import cached_features

        have = set(self.rows)
        new = [int(r) for r in rows if int(r) not in have]
        if new:
            began = time.perf_counter()
            features, use = cached_features(
                self.backbone, images.subset(new), cache, layers=self.layers, device=device,
                batch_size=batch_size, notice=notice,
            )  # fmt: skip
            self.seconds += time.perf_counter() - began
            self.from_cache += use.from_cache
            self.extracted += use.extracted
            self.rows += new
            self.features = {
                layer: np.concatenate([self.features[layer], features[layer]])
                if layer in self.features
                else features[layer]
                for layer in self.layers
            }
        where = {r: i for i, r in enumerate(self.rows)}
        index = np.array([where[int(r)] for r in rows], dtype=np.int64)
        if len(index) == len(self.rows) and (index == np.arange(len(index))).all():
            return self.features
        return {layer: values[index] for layer, values in self.features.items()}
