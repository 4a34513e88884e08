"""A time limit for training, set by a job with a budget and read by the training loop.

A budget is the job's, not a config knob (a saved config must train the same model
again): the job opens a ``Deadline`` for the fit, and the loop, between epochs, stops
before an epoch that its last epoch's time says would not finish inside it; the best
epoch's weights are kept, as with early stopping, and the cut is recorded here."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["Deadline", "active", "deadline"]


@dataclass
class Deadline:
    at: float  # time.monotonic() by which training must end
    cuts: list[str] = field(default_factory=list)  # what was cut, in words

    def remaining(self) -> float:
        return self.at - time.monotonic()


_ACTIVE: ContextVar[Deadline | None] = ContextVar("headstart_deadline", default=None)


def active() -> Deadline | None:
    """The deadline training runs under here (None: no limit)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Training inside the block ends within ``seconds`` from now (between epochs)."""
    limit = Deadline(time.monotonic() + seconds)
    token = _ACTIVE.set(limit)
    try:
        yield limit
    finally:
        _ACTIVE.reset(token)
