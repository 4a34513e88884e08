"""Each epoch's batches for the training loop: a seeded shuffle, or class-balanced draws
(``class_weights="sampling"``) that show every class equally often instead of weighting
the loss.

Why a sampler and not only loss weights: the gradient loop sees a small class's few
images in one or two batches an epoch; weighting them up makes those few steps large,
where drawing them more often spreads them over the epoch at the usual step size.
Measured on fine-tune at a class ratio of 10 (docs/BENCHMARKS.md, section 17), the
weighted loss cost 4.9-5.2 points of accuracy at the training shares; sampling gained
more balanced accuracy (1.5-3.4 points over none) and cost 0.2-1.4.

The order is a function of the labels and the generator alone, and the loop seeds that
generator by (seed, epoch) exactly as it seeds its plain shuffle. So the same seed gives
the same batches, a run resumed mid-epoch sees the batches it would have seen, and under
torchrun every rank builds the same global order and takes its slice of each batch
(`headstart.train.distributed.shard_batches`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["balanced_order", "epoch_batches"]


def epoch_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool,
    balance_labels: Sequence[int] | np.ndarray | None = None,
) -> list[list[int]]:
    """This epoch's global batches of indices into the ``n`` training items: shuffled by a
    generator seeded by (seed, epoch), or drawn class-balanced from the same generator
    (``balance_labels``, the items' labels); in order without ``shuffle``. A trailing
    batch of one is merged into the one before (BatchNorm needs two)."""
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        if balance_labels is not None:
            order = balanced_order(balance_labels, generator)
        else:
            order = torch.randperm(n, generator=generator).tolist()
    else:
        order = list(range(n))
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def balanced_order(labels: Sequence[int] | np.ndarray, generator: torch.Generator) -> list[int]:
    """One epoch of draws, as many as there are images, each class drawn equally often.

    Every class that has images gets ``n // k`` draws (``k`` such classes), and the
    ``n % k`` left over go one each to classes the generator picks, so class counts
    differ by one at most. Within a class the draws walk seeded permutations of its
    images: a small class repeats each image ``draws / count`` times (rounded up or
    down, never one image twice before every other has been drawn once), a large class
    shows a different random subset each epoch. The epoch keeps its length (and the
    schedule its steps); the draws are then shuffled together."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return []
    classes = np.unique(labels)
    k = len(classes)
    quota = np.full(k, n // k, dtype=np.int64)
    extra = torch.randperm(k, generator=generator)[: n % k].numpy()
    quota[extra] += 1
    draws: list[np.ndarray] = []
    for label, wanted in zip(classes.tolist(), quota.tolist(), strict=True):
        members = np.flatnonzero(labels == label)
        rounds = -(-wanted // len(members))  # ceil: enough permutations to fill the quota
        walk = [
            members[torch.randperm(len(members), generator=generator).numpy()]
            for _ in range(rounds)
        ]
        draws.append(np.concatenate(walk)[:wanted])
    order = np.concatenate(draws)
    return order[torch.randperm(n, generator=generator).numpy()].tolist()
