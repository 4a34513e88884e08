"""The training loop's share of distributed training: DDP, the shard of each global batch,
the global loss, per-rank seeds, and what to say when a peer is lost.

Every helper here takes a group of one as well (nanoGPT's ``raw_model = model.module if
ddp else model``): `wrap_model` returns the model itself, `step_loss` the criterion's own
mean, `shard_batches` and `shard_dataset` everything. The loop settles the mode once,
through them, and its step never asks its rank.

The loop builds each epoch's *global* batches from a generator seeded by (seed, epoch),
exactly as on one process; rank r takes the r-th contiguous slice of every global batch.
So the data order is the same at any world size by construction, a step is the same
step everywhere, and a checkpoint's (epoch, step) means the same at 1 or at N ranks:
resuming at another world size continues the same run.

The loss each rank back-propagates is its slice's share of the *global* batch's mean
(per-sample losses summed, divided by the global denominator, times the world size,
which DDP's gradient averaging divides out again), so the gradient equals one process's
on the whole batch, up to the order of float additions, for unequal slices and class
weights alike. BatchNorm layers that train use per-rank batch statistics (DDP's default;
the running statistics follow rank 0's, which DDP broadcasts at every forward pass).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from headstart.errors import TrainingError
from headstart.parallel import World, sum_across

__all__ = [
    "GlobalStepLoss",
    "StepLoss",
    "StepTotals",
    "global_step_loss",
    "peer_lost",
    "seed_rank",
    "shard_batches",
    "shard_dataset",
    "step_loss",
    "wrap_model",
]


def shard_batches(batches: list[list[int]], w: World) -> tuple[list[list[int]], list[bool]]:
    """This rank's slice of each global batch, and whether the slice is a stand-in.

    A global batch smaller than the world leaves some rank without images; it still has
    to take part in the step (DDP's all-reduce needs every rank), so it runs the batch's
    first image with a weight of zero (``padded``)."""
    mine, padded = [], []
    for batch in batches:
        size, extra = divmod(len(batch), w.size)
        start = w.rank * size + min(w.rank, extra)
        part = batch[start : start + size + (w.rank < extra)]
        padded.append(not part)
        mine.append(part or batch[:1])
    return mine, padded


def shard_dataset(dataset: Dataset, w: World) -> Dataset:
    """This rank's share of ``dataset`` (every ``w.size``-th item from ``w.rank``); all of it
    in a group of one."""
    return dataset if w.size == 1 else Subset(dataset, range(w.rank, len(dataset), w.size))


def wrap_model(model: nn.Module, device: torch.device, w: World) -> nn.Module:
    """The module a step runs: ``model`` itself in a group of one, else ``model`` in
    DistributedDataParallel (parameters broadcast from rank 0 here).

    ``static_graph``: a classifier fed by an earlier stage leaves the later stages'
    trainable parameters without gradients, which plain DDP waits for forever; the set
    of parameters used is the same at every step, so DDP learns it once (rather than
    searching the graph at every step, as ``find_unused_parameters`` does).
    The loop saves the *inner* model's state, so DDP's ``module.`` prefix never reaches a
    checkpoint or a saved model."""
    if w.size == 1:
        return model
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)


def seed_rank(seed: int, w: World, epoch: int, step: int) -> None:
    """Rank 0 keeps the run's own RNG (so one process and rank 0 draw alike); the other
    ranks get seeds of their own, so random augmentation differs between slices."""
    if w.rank == 0:
        return
    derived = ((seed * 1_000_003 + epoch) * 1_000_003 + step) * 1_009 + w.rank
    torch.manual_seed(derived % (2**63))
    random.seed(derived)


@dataclass(frozen=True)
class StepTotals:
    """What one step adds to its epoch, over every rank (one all-reduce, float64)."""

    loss_sum: float  # the epoch's running loss grows by this
    loss_weight: float  # the denominator of the step's mean loss
    correct: int
    seen: int
    interrupted: bool  # a signal reached this rank (any rank, once reduced)
    mean_loss: float  # the step's loss, as reported and checked for being finite

    @classmethod
    def of(cls, loss: float, loss_weight: float, correct: int, seen: int, flag: bool):
        return cls(loss, loss_weight, correct, seen, flag, loss / max(loss_weight, 1e-12))

    def reduced(self) -> StepTotals:
        values = torch.tensor(
            [self.loss_sum, self.loss_weight, self.correct, self.seen, float(self.interrupted)],
            dtype=torch.float64,
        )
        s = sum_across(values).tolist()
        return StepTotals.of(s[0], s[1], int(s[2]), int(s[3]), s[4] > 0)


class StepLoss:
    """A group of one's step loss: ``CrossEntropyLoss``'s own mean over the batch.

    `losses` runs inside the step's autocast; `reduce` turns its result into (the loss to
    back-propagate, the step's totals), with ``hook`` (a test's stand-in loss) applied to
    the loss before its value is read."""

    def __init__(self, class_weights: torch.Tensor | None, label_smoothing: float) -> None:
        self.class_weights = class_weights
        self.criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits.float(), targets)

    def reduce(
        self,
        losses: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
        padded: bool,
        interrupted: bool,
        hook: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, StepTotals]:
        loss = hook(losses)
        value = loss.item()
        correct = int((logits.detach().argmax(1) == targets).sum())
        count = len(targets)
        return loss, StepTotals(value * count, count, correct, count, interrupted, value)


class GlobalStepLoss(StepLoss):
    """A rank's step loss in a group of several: its slice's share of the global batch's
    mean (`global_step_loss`), so the gradient is one process's on the whole batch."""

    def __init__(
        self, class_weights: torch.Tensor | None, label_smoothing: float, w: World
    ) -> None:
        super().__init__(class_weights, label_smoothing)
        self.w = w
        self.per_sample = nn.CrossEntropyLoss(
            weight=class_weights, label_smoothing=label_smoothing, reduction="none"
        )

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.per_sample(logits.float(), targets)

    def reduce(
        self,
        losses: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
        padded: bool,
        interrupted: bool,
        hook: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, StepTotals]:
        loss, totals = global_step_loss(
            losses, targets, logits, padded, self.class_weights, self.w, interrupted
        )
        return hook(loss), totals


def step_loss(class_weights: torch.Tensor | None, label_smoothing: float, w: World) -> StepLoss:
    """The step loss for this group: the plain criterion for one, the global share for more."""
    if w.size == 1:
        return StepLoss(class_weights, label_smoothing)
    return GlobalStepLoss(class_weights, label_smoothing, w)


def global_step_loss(
    per_sample: torch.Tensor,
    targets: torch.Tensor,
    logits: torch.Tensor,
    padded: bool,
    class_weights: torch.Tensor | None,
    w: World,
    interrupted: bool,
) -> tuple[torch.Tensor, StepTotals]:
    """(the loss this rank back-propagates, the step's totals over all ranks).

    ``per_sample``: unreduced cross-entropy (class weights already applied). Its global
    mean is sum / sum of the targets' class weights (or the image count), which is what
    ``CrossEntropyLoss``'s mean is on one process."""
    keep = 0.0 if padded else 1.0
    weight = class_weights[targets] if class_weights is not None else torch.ones_like(per_sample)
    local_sum = per_sample.sum() * keep
    local = StepTotals.of(
        float(local_sum.detach()),
        float(weight.sum()) * keep,
        int((logits.detach().argmax(1) == targets).sum()) if not padded else 0,
        0 if padded else len(targets),
        interrupted,
    )
    totals = local.reduced()
    return local_sum * w.size / max(totals.loss_weight, 1e-12), totals


def peer_lost(error: Exception, w: World, checkpoint: object) -> TrainingError | None:
    """The error to raise when ``error`` is a collective failing on a dead or stuck peer."""
    text = str(error)
    markers = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "closed")
    if not isinstance(error, dist.DistError) and not any(m in text.lower() for m in markers):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    kept = f"; the last checkpoint, {checkpoint}, is whole" if checkpoint else ""
    return TrainingError(
        f"rank {w.rank} of {w.size}: another rank stopped answering ({first[:200]}); "
        f"training stopped{kept}.",
        hint="Run again with {resume} to continue, at this or another number of processes.",
    )
