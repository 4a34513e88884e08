"""What the imbalance and sampling tests share: labelled noise images in chosen class
counts, and a callback that keeps each plan the strategies print."""

from __future__ import annotations

import numpy as np

from headstart.data.arrays import from_arrays
from headstart.train.callbacks import Callback


def noisy(counts: dict[str, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = [name for name, count in counts.items() for _ in range(count)]
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    return from_arrays(images, labels)


class Plans(Callback):
    def __init__(self) -> None:
        self.plans: list = []

    def on_plan(self, plan) -> None:
        self.plans.append(plan)
