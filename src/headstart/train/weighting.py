"""Class weights, decided once from the training images: ``class_weights="auto"`` (the
default) weights the loss by inverse class frequency when the largest training class
holds at least ``IMBALANCE_RATIO`` times the images of the smallest, and leaves it
unweighted below; "none" and "balanced" are taken as given.

Decided on the images that train (after the test split, any draw and the early-stopping
hold-out), so the numbers said are those of the training images, and recorded beside
the model (``ClassWeighting.to_dict``) with the plan note that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from headstart.data.findings import IMBALANCE_RATIO

__all__ = [
    "AUTO",
    "PROBE_PRIOR_SHIFT",
    "ClassWeighting",
    "balanced_weights",
    "class_weighting",
]

AUTO = "auto"

# Balanced, a linear probe solved to convergence also shifts its biases by this multiple
# of the log class shares (``fit_linear_probe``'s ``prior_shift``): measured on
# Fashion-MNIST and the bundled sample with half the classes cut to 10 %, 0.5 gained
# about 2 points of balanced accuracy at no cost in accuracy at the training shares
# (1.0 gained a little more and cost about 1 point; docs/BENCHMARKS.md, "Imbalance").
PROBE_PRIOR_SHIFT = 0.5


@dataclass(frozen=True)
class ClassWeighting:
    """What ``class_weights`` came to on one set of training images, and why."""

    setting: str  # as asked: "auto", "none" or "balanced"
    used: str  # what trains: "none" or "balanced"
    smallest: int  # images in the smallest class that has any
    largest: int  # images in the largest class
    threshold: float = IMBALANCE_RATIO  # the ratio from which auto weights

    @property
    def ratio(self) -> float:
        return self.largest / max(self.smallest, 1)

    def note(self) -> str | None:
        """The plan's line about it (settings as ``{name}``), or None when the loss is
        unweighted by default on near-balanced classes (nothing was decided for the user)."""
        counts = f"the training classes hold {self.smallest} to {self.largest} images"
        if self.setting == AUTO and self.used == "balanced":
            return (
                f"class weights balanced (auto): {counts} (ratio {self.ratio:.1f}, at least "
                f"{self.threshold:g}); judge by balanced accuracy; {{no_class_weights}} "
                "trains unweighted"
            )
        if self.setting == "balanced":
            return f"class weights balanced, as asked ({counts}, ratio {self.ratio:.1f})"
        if self.ratio >= self.threshold:  # "none" asked for on imbalanced classes
            return (
                f"class weights none, as asked, although {counts} (ratio {self.ratio:.1f}); "
                "judge by balanced accuracy"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "used": self.used,
            "smallest": self.smallest,
            "largest": self.largest,
            "ratio": round(self.ratio, 3),
            "threshold": self.threshold,
        }


def class_weighting(labels: np.ndarray, num_classes: int, setting: str) -> ClassWeighting:
    """``setting`` ("auto", "none", "balanced") decided on these training ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    present = counts[counts > 0]
    smallest = int(present.min()) if len(present) else 0
    largest = int(present.max()) if len(present) else 0
    used = setting
    if setting == AUTO:
        imbalanced = smallest > 0 and largest / smallest >= IMBALANCE_RATIO
        used = "balanced" if imbalanced else "none"
    return ClassWeighting(setting, used, smallest, largest)


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse class frequency, mean 1 over the classes, float32 (a class without
    images gets the weight of a class with one; it never appears in the loss)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return (counts.sum() / (len(counts) * np.maximum(counts, 1))).astype(np.float32)
