"""Grad-CAM heatmaps written as files: each image's heatmap over the image, one PNG per
image, for ``headstart predict --explain`` (and anyone with a list of files)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart._internal.atomic import atomic_write
from headstart.errors import ConfigError

__all__ = ["WrittenHeatmap", "check_explainable", "write_heatmaps"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 64  # images explained, then written, at a time


@dataclass(frozen=True)
class WrittenHeatmap:
    source: str  # the image explained
    target: str  # the class explained
    probability: float  # the model's probability of it
    path: Path  # the PNG written


def check_explainable(clf: Any) -> None:
    """A ConfigError unless ``clf`` can compute Grad-CAM (a PyTorch model; ONNX cannot)."""
    if not hasattr(clf, "explain"):
        raise ConfigError(
            f"{type(clf).__name__} cannot explain its predictions: Grad-CAM needs the "
            "gradients of the PyTorch model, which an ONNX file does not give.",
            hint="Drop {explain}, or use the model folder `headstart train` wrote.",
        )


def write_heatmaps(
    clf: Any,
    images: Sequence[str | os.PathLike[str]],
    folder: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str = "auto",
) -> list[WrittenHeatmap]:
    """One ``<n>-<name>.heatmap.png`` per image file in ``folder`` (made if missing): the
    image with where ``clf`` looks for ``classes`` (one per image; None: its top class)
    laid over it. ``n`` keeps two images of the same name apart."""
    check_explainable(clf)
    images, folder = list(images), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[WrittenHeatmap] = []
    for start in range(0, len(images), _CHUNK):  # decoded images held a chunk at a time
        wanted = None if classes is None else list(classes)[start : start + _CHUNK]
        chunk = images[start : start + _CHUNK]
        explained = clf.explain(chunk, classes=wanted, batch_size=batch_size, device=device)
        for item in explained:
            stem = _UNSAFE.sub("_", Path(item.source).stem)[:80] or "image"
            path = folder / f"{len(written) + 1:04d}-{stem}.heatmap.png"
            data = item.png()
            atomic_write(path, lambda handle, data=data: handle.write(data))
            written.append(WrittenHeatmap(item.source, item.target, item.probability, path))
    return written
