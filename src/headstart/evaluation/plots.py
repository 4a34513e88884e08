"""PNG plots, drawn with matplotlib's Agg renderer (no display, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from headstart._internal.atomic import atomic_write

__all__ = ["new_figure", "save_confusion_matrix", "save_figure", "save_pareto_plot"]


def new_figure(width: float, height: float) -> tuple[Figure, object]:
    """A figure drawn by Agg directly: no pyplot, so the user's backend is left alone."""
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def save_figure(figure: Figure, path: Path) -> Path:
    """Write a figure as PNG atomically."""
    atomic_write(Path(path), lambda handle: figure.savefig(handle, format="png", dpi=110))
    return Path(path)


def save_confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = ""
) -> Path:
    """Rows are true classes, columns predictions; cells show counts, colour shows row share."""
    counts = np.asarray(matrix, dtype=np.int64)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(classes) + 2.0)
    figure, axes = new_figure(size + 1.0, size)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(classes)), labels=list(classes), rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), labels=list(classes))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title:
        axes.set_title(title)
    for row in range(len(classes)):
        for col in range(len(classes)):
            colour = "white" if shares[row, col] > 0.5 else "black"
            axes.text(col, row, str(counts[row, col]), ha="center", va="center", color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of true class")
    figure.tight_layout()
    return save_figure(figure, path)


def save_pareto_plot(
    points: Sequence[tuple[str, float, float, bool]], path: Path, title: str = ""
) -> Path:
    """Predicted accuracy against batch-1 latency, one point per (name, latency ms,
    accuracy, on the front); the Pareto front joined by a line and labelled."""
    figure, axes = new_figure(7.5, 4.8)
    for name, latency, accuracy, front in points:
        axes.scatter(latency, 100 * accuracy, s=28, color="tab:blue" if front else "0.65",
                     zorder=3 if front else 2)  # fmt: skip
        if front:
            axes.annotate(name, (latency, 100 * accuracy), fontsize=7, xytext=(4, 3),
                          textcoords="offset points")  # fmt: skip
    front = sorted((p for p in points if p[3]), key=lambda p: p[1])
    if front:
        axes.plot([p[1] for p in front], [100 * p[2] for p in front], color="tab:blue", lw=1)
    axes.set_xlabel("batch-1 latency of the backbone (ms, this machine)")
    axes.set_ylabel("predicted accuracy (%, cross-validated probe)")
    axes.set_title(title or "candidates: accuracy against latency (blue: Pareto front)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)
