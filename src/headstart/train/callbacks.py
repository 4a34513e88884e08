"""Progress hooks. The library never prints: strategies and the training loop report
through a ``Callback``, and each face (the CLI, a server) renders it its own way."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Callback", "CallbackList", "EpochRecord"]


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

    # A training job's hooks (`headstart.job`): what it loaded, chose and made.

    def on_job_start(self, params: dict[str, Any]) -> None:
        """A training job begins; ``params``: its settings, flat (name -> str, int,
        float, bool or None): strategy, backbone, data, test_size, every config field."""

    def on_estimate(self, step: str, seconds: float, basis: str) -> None:
        """Before a long step ("ranking", "extraction", "fine-tune", "ensemble", "test
        pass", ...): its estimated ``seconds`` on this machine, from a short timed pass;
        ``basis``: how it was reckoned, in words."""

    def on_note(self, text: str) -> None:
        """A line worth telling: what the data holds, what was chosen and why."""

    def on_dataset(self, label: str, dataset: Any) -> None:
        """A dataset was loaded ("data", "train", "test", "unlabelled"); its ``report``
        says what loading skipped or converted."""

    def on_data(self, train: Any, test: Any) -> None:
        """The images the job trains and tests on (after the split and any sampling)."""

    def on_diagnosis(self, diagnosis: Any, said: tuple[str, ...]) -> None:
        """The data doctor's findings on the training and test images; ``said``: the
        kinds of finding the load report already gave (``on_dataset``)."""

    def on_ranking(self, ranking: Any, top: int) -> None:
        """Candidates were ranked on the training images; ``top``: how many to show."""

    def on_job_end(self, result: Any) -> None:
        """The job is done: ``result.metrics`` (as saved), ``result.evaluation`` (the full
        test evaluation), ``result.folder`` (the model folder, or None),
        ``result.classifier``."""


class CallbackList(Callback):
    """Several callbacks as one: every hook, including those a member adds (a
    comparison's ``on_run_start`` / ``on_run_end``), goes to each member that has it,
    in order."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks = [c for c in callbacks if c is not None]

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            members = object.__getattribute__(self, "callbacks")

            def fan_out(*args: Any, **kwargs: Any) -> None:
                for member in members:
                    hook = getattr(member, name, None)
                    if hook is not None:
                        hook(*args, **kwargs)

            return fan_out
        return object.__getattribute__(self, name)


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
