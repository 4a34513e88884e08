"""Which process this is among how many: PyTorch's own process group, nothing home-made.

torchrun (``torch.distributed.run``) starts one process per rank and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; `init_distributed` joins
that group (gloo on the CPU, nccl on CUDA, each rank on GPU ``LOCAL_RANK``). Without
torchrun, or after `close_distributed`, `world()` is a world of one and every helper
here is a no-op, so single-process code pays nothing.

A collective that waits on a dead or stuck peer fails after ``HEADSTART_DIST_TIMEOUT``
seconds (default 600) instead of the hour-long defaults; a peer that died outright is
noticed by gloo at once (its connection closes) and by torchrun, which stops the other
ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from headstart.errors import ConfigError

__all__ = [
    "TIMEOUT_ENV",
    "World",
    "any_across",
    "broadcast",
    "close_distributed",
    "gather_to_all",
    "init_distributed",
    "launched_by_torchrun",
    "sum_across",
    "world",
]

TIMEOUT_ENV = "HEADSTART_DIST_TIMEOUT"
_DEFAULT_TIMEOUT_S = 600.0

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int  # 0 .. size-1; rank 0 alone writes files and reports
    size: int  # processes in the group (1: not distributed)
    local_rank: int  # rank on this machine (the GPU it uses)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun started with more than one rank in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> World:
    """The process group this process belongs to (a world of one when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World(0, 1, 0)


def _timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV, str(_DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(
            f"The environment variable {TIMEOUT_ENV} must be a number of seconds > 0. "
            f"Got {text!r} instead."
        )
    return timedelta(seconds=seconds)


def init_distributed() -> World:
    """Join the group torchrun set up (once); a world of one when not under torchrun."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise ConfigError("This build of PyTorch has no torch.distributed; run one process.")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "gloo"
    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)  # "cuda" now means this rank's GPU
        backend = "nccl"
    dist.init_process_group(backend, timeout=_timeout())
    return world()


def close_distributed() -> None:
    """Leave the group: afterwards this process is a world of one again."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_all(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if world().size == 1:
        return [value]
    out: list[Any] = [None] * world().size
    dist.all_gather_object(out, value)
    return out


def sum_across(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks (float64 on the CPU for gloo; in place on nccl)."""
    if world().size == 1:
        return values
    if dist.get_backend() == "nccl":
        values = values.cuda()
    dist.all_reduce(values)
    return values.cpu()


def any_across(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (this rank's own ``flag`` in a world of one)."""
    return bool(sum_across(torch.tensor([float(flag)])))
