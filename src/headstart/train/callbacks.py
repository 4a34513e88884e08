"""Progress hooks. The library never prints: strategies and the training loop report
through a ``Callback``, and each face (the CLI, a server) renders it its own way."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Callback", "EpochRecord"]


class Callback:
    """Progress hooks; every method is optional. The CLI prints from these."""

    def on_stage(self, name: str, detail: str) -> None:
        """A new stage begins (e.g. 'linear probe', 'fine-tune')."""

    def on_plan(self, plan: Any) -> None:
        """The freeze plan, before any training."""

    def on_progress(self, label: str, done: int, total: int) -> None:
        """Long non-gradient work, e.g. feature extraction."""

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        """After each optimisation step."""

    def on_epoch(self, record: EpochRecord) -> None:
        """After each epoch, with its metrics."""


@dataclass(frozen=True)
class EpochRecord:
    stage: str
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float  # peak-group learning rate at the end of the epoch
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
