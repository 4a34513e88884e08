"""The training loop's share of distributed training: DDP, the shard of each global batch,
the global loss, per-rank seeds, and what to say when a peer is lost.

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

import torch
import torch.distributed as dist
from torch import nn

from headstart.errors import TrainingError
from headstart.parallel import World, sum_across

__all__ = [
    "StepTotals",
    "global_step_loss",
    "peer_lost",
    "seed_rank",
    "shard_batches",
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


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (parameters broadcast from rank 0 here).

    ``static_graph``: a classifier fed by an earlier stage leaves the later stages'
    trainable parameters without gradients, which plain DDP waits for forever; the set
    of parameters used is the same at every step, so DDP learns it once (rather than
    searching the graph at every step, as ``find_unused_parameters`` does).
    The loop saves the *inner* model's state, so DDP's ``module.`` prefix never reaches a
    checkpoint or a saved model."""
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


class StepTotals:
    """What one step contributes, summed over the ranks in one all-reduce (float64)."""

    def __init__(self, loss: float, loss_weight: float, correct: int, seen: int, flag: bool):
        self.loss_sum, self.loss_weight = loss, loss_weight
        self.correct, self.seen, self.interrupted = correct, seen, flag

    def reduced(self) -> StepTotals:
        values = torch.tensor(
            [self.loss_sum, self.loss_weight, self.correct, self.seen, float(self.interrupted)],
            dtype=torch.float64,
        )
        s = sum_across(values).tolist()
        return StepTotals(s[0], s[1], int(s[2]), int(s[3]), s[4] > 0)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.loss_weight, 1e-12)


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
    local = StepTotals(
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
