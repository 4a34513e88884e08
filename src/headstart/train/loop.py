"""The training loop: pure, callback-driven, resumable, and safe to interrupt.

One loop serves every gradient stage (a head on cached features, fine-tuning,
training from scratch). What it guarantees:

- **Resumable to the bit.** A checkpoint holds the model, optimizer, scheduler,
  epoch *and step*, RNG states, history, early-stopping state and the freeze
  stage. Each epoch's shuffle (or class-balanced draw, `headstart.train.sampling`)
  comes from a generator seeded by (seed, epoch), so a resumed run sees the same
  batches and ends with the same weights as an uninterrupted one (on CPU, with
  ``num_workers=0``).
- **Atomic checkpoints.** Written to a temp file in the same folder, fsynced,
  renamed over the old one: a crash leaves the previous checkpoint loadable.
- **Interruptible.** SIGINT/SIGTERM finish the current step, save a checkpoint
  and raise ``TrainingInterrupted`` (the CLI exits 130).
- **No silent NaN.** A non-finite loss stops the run before the optimizer step,
  naming epoch and step; non-finite weights are never saved.
- **Distributed when launched so.** Inside a process group (torchrun), the model runs in
  DDP and each rank trains on its slice of the same global batches; rank 0 alone
  writes checkpoints and reports; validation sums are all-reduced, so early stopping
  stops every rank together (see `headstart.train.distributed`). A single process is a
  group of one: the mode is settled once, when the run is set up, and a step takes the
  same path at any world size.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from headstart.errors import TrainingError, TrainingInterrupted
from headstart.parallel import any_across, broadcast, world
from headstart.train.callbacks import Callback, EpochRecord
from headstart.train.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    python_rng,
    python_rng_to_list,
    save_checkpoint,
)
from headstart.train.config import TrainConfig
from headstart.train.distributed import (
    peer_lost,
    seed_rank,
    shard_batches,
    shard_dataset,
    step_loss,
    wrap_model,
)
from headstart.train.epoch_parts import (
    autocast_for,
    evaluate_loader,
    lr_scheduler,
    to_device,
    validate_shards,
)
from headstart.train.sampling import epoch_batches

__all__ = ["TrainOutcome", "evaluate_loader", "train_loop"]


@dataclass
class TrainOutcome:
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based epoch whose weights were kept
    stopped_early: bool = False
    resumed_from: tuple[int, int] | None = None  # (epoch, step) of the checkpoint resumed


@contextlib.contextmanager
def _interrupt_flag() -> Iterator[dict[str, bool]]:
    """SIGINT/SIGTERM set a flag instead of killing the process mid-step."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["set"]:  # a second signal: the user means it, stop without waiting
            raise KeyboardInterrupt
        flag["set"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train_loop(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    *,
    param_groups: Sequence[dict[str, Any]],
    config: TrainConfig,
    stage: str,
    epochs: int | None = None,
    class_weights: torch.Tensor | None = None,
    balance_labels: Sequence[int] | None = None,
    after_train_mode: Callable[[], None] | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
    device: torch.device | None = None,
    loss_hook: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None,
    run_key: str | None = None,
) -> TrainOutcome:
    """Train ``model`` in place; keep the best validation epoch's weights.

    ``after_train_mode`` runs after every ``model.train()`` (it holds frozen
    BatchNorm layers in eval mode). ``balance_labels``: ``train_set``'s labels, to draw
    each epoch's batches class-balanced (``class_weights="sampling"``). ``loss_hook``
    lets tests inject a loss value.
    """
    if balance_labels is not None and len(balance_labels) != len(train_set):
        raise TrainingError(
            f"train_loop: balance_labels holds {len(balance_labels)} labels for "
            f"{len(train_set)} training items; it needs one label per item."
        )
    run = _TrainingRun(
        model,
        train_set,
        val_set,
        param_groups=param_groups,
        config=config,
        stage=stage,
        epochs=epochs or config.epochs,
        class_weights=class_weights,
        balance_labels=balance_labels,
        after_train_mode=after_train_mode,
        checkpoint=checkpoint,
        callback=callback,
        device=device or torch.device("cpu"),
        loss_hook=loss_hook,
        run_key=run_key,
    )
    run.resume(resume)
    with _interrupt_flag() as interrupted, _peer_errors(run.w, checkpoint):
        for epoch in range(run.start_epoch, run.epochs):
            if config.patience and run.bad_epochs >= config.patience:
                run.outcome.stopped_early = True
                break
            if _past_deadline(run, epoch):
                break
            run.train_epoch(epoch, interrupted)
            run.end_of_epoch(epoch, interrupted)
    return run.finish()


def _past_deadline(run: _TrainingRun, epoch: int) -> bool:
    """Whether a job's budget (`headstart.train.deadline`) leaves too little time for
    one more epoch, judged by the last one; the first epoch always runs."""
    from headstart.train.deadline import active

    limit = active()
    history = run.outcome.history
    if limit is None or not history or history[-1].seconds < limit.remaining():
        return False
    scored = [r for r in history if r.val_accuracy is not None]
    if scored:
        best = max(scored, key=lambda r: (r.val_accuracy, -(r.val_loss or 0.0)))
        kept = f"kept the best epoch's weights (epoch {best.epoch} by validation)"
    else:
        kept = "kept the last epoch's weights (no validation images to choose by)"
    cut = (
        f"{run.stage}: stopped at the budget after epoch {epoch} of {run.epochs} "
        f"(an epoch takes {history[-1].seconds:.0f}s, {max(limit.remaining(), 0):.0f}s "
        f"were left); {kept}"
    )
    limit.cuts.append(cut)
    run.callback.on_note(cut)
    return True


class _TrainingRun:
    """One call of `train_loop`: what changes as it trains, and its named steps.

    The distributed mode is settled here, once: the step runs ``net`` (the model itself
    in a group of one, its DDP wrapper in a larger group) and ``loss`` (the criterion's
    mean, or this rank's share of the global batch's), and never asks its rank; files
    and reports are rank 0's (``writes``, and a silent callback on the other ranks)."""

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        val_set: Dataset | None,
        *,
        param_groups: Sequence[dict[str, Any]],
        config: TrainConfig,
        stage: str,
        epochs: int,
        class_weights: torch.Tensor | None,
        balance_labels: Sequence[int] | None,
        after_train_mode: Callable[[], None] | None,
        checkpoint: Path | None,
        callback: Callback | None,
        device: torch.device,
        loss_hook: Callable[[torch.Tensor, int, int], torch.Tensor] | None,
        run_key: str | None,
    ) -> None:
        self.w = w = world()
        # Rank 0 alone reports and writes; the others train in step with it, silently.
        self.callback = (callback or Callback()) if w.is_main else Callback()
        self.writes = checkpoint is not None and w.is_main
        self.model, self.net, self.train_set, self.config = model, model, train_set, config
        self.stage, self.epochs, self.device, self.fast = stage, epochs, device, config.fast
        self.after_train_mode, self.checkpoint = after_train_mode, checkpoint
        self.loss_hook, self.run_key = loss_hook, run_key
        self.balance_labels = balance_labels
        model.to(device)
        if self.fast:
            model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(param_groups)
        steps = len(epoch_batches(len(train_set), config.batch_size, config.seed, 0, shuffle=False))
        self.scheduler = lr_scheduler(self.optimizer, config, steps * epochs, steps)
        weights = None if class_weights is None else class_weights.to(device)
        self.loss = step_loss(weights, config.label_smoothing, w)
        self.val_loader = None
        if val_set is not None and len(val_set):
            self.val_loader = DataLoader(
                shard_dataset(val_set, w),
                batch_size=config.batch_size * 2,
                num_workers=config.num_workers,
            )
        self.outcome = TrainOutcome()
        self.start_epoch, self.start_step = 0, 0
        self.best_score: tuple[float, float] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.running: tuple[float, int, int] = (0.0, 0, 0)  # this epoch's loss, correct, seen
        self.epoch_started = 0.0

    def resume(self, resume: bool) -> None:
        """Seed the run; continue its checkpoint if asked and there is one (rank 0 reads
        it and hands it to the others: no rank but 0 needs the file)."""
        config, checkpoint, stage = self.config, self.checkpoint, self.stage
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        state = load_checkpoint(checkpoint) if (resume and checkpoint and self.w.is_main) else None
        state = broadcast(state)
        if resume and checkpoint and state is None:
            self.callback.on_stage(
                stage, f"no checkpoint at {checkpoint}: starting from the beginning"
            )
        if not resume and checkpoint and Path(checkpoint).exists():
            self.callback.on_stage(
                stage, f"replacing the earlier checkpoint {checkpoint} (not resuming)"
            )
        if state is not None:
            self._restore(state)
        seed_rank(config.seed, self.w, self.start_epoch, self.start_step)
        self.net = wrap_model(self.model, self.device, self.w)

    def _restore(self, state: dict[str, Any]) -> None:
        if state["stage"] != self.stage:
            raise TrainingError(
                f"{self.checkpoint}: saved during stage {state['stage']!r}, "
                f"cannot resume {self.stage!r}."
            )
        if self.run_key is not None and state.get("run_key") not in (None, self.run_key):
            raise TrainingError(
                f"{self.checkpoint}: saved by a run with other settings or data (config, "
                "backbone, weights or images changed); resuming would not give that run's result.",
                hint="Start afresh without {resume}, or restore the original settings.",
            )
        self.model.load_state_dict(_without_ddp_prefix(state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(python_rng(state["python_rng"]))
        self.outcome.history = [EpochRecord(**r) for r in state["history"]]
        best = state["best_score"]
        self.best_score = tuple(best) if best is not None else None
        self.best_state = state["best_model"]
        self.bad_epochs = int(state["bad_epochs"])
        self.running = tuple(state["running"])
        self.outcome.resumed_from = (self.start_epoch, self.start_step)

    def train_epoch(self, epoch: int, interrupted: dict[str, bool]) -> None:
        """This rank's slice of each of the epoch's global batches, from where it resumes."""
        config = self.config
        self.epoch_started = time.perf_counter()
        self.net.train()
        if self.after_train_mode is not None:
            self.after_train_mode()
        batches = epoch_batches(
            len(self.train_set),
            config.batch_size,
            config.seed,
            epoch,
            shuffle=True,
            balance_labels=self.balance_labels,
        )
        mine, padded = shard_batches(batches, self.w)
        first = self.start_step if epoch == self.start_epoch else 0
        if first == 0:
            self.running = (0.0, 0, 0)
        # Its own generator: making the iterator must not draw from the global RNG,
        # or a run resumed mid-epoch would be one draw off the uninterrupted one.
        loader = DataLoader(
            self.train_set,
            batch_sampler=mine[first:],
            num_workers=config.num_workers,
            generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch),
        )
        for step, (inputs, targets) in enumerate(loader, start=first):
            self.step(epoch, step, len(batches), inputs, targets, padded[step], interrupted)

    def step(
        self,
        epoch: int,
        step: int,
        steps: int,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        padded: bool,
        interrupted: dict[str, bool],
    ) -> None:
        """One optimizer step; a signal on any rank saves and stops after it."""
        inputs, targets = to_device(inputs, targets, self.device, self.fast)
        with autocast_for(self.device, self.fast):
            logits = self.net(inputs)
            losses = self.loss.losses(logits, targets)
        hook = (
            _no_hook if self.loss_hook is None else partial(_at_step, self.loss_hook, epoch, step)
        )
        loss, totals = self.loss.reduce(losses, targets, logits, padded, interrupted["set"], hook)
        interrupted["set"] = totals.interrupted
        if not math.isfinite(totals.mean_loss):
            raise self._non_finite(totals.mean_loss, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        loss_sum, correct, seen = self.running
        self.running = (loss_sum + totals.loss_sum, correct + totals.correct, seen + totals.seen)
        self.callback.on_step(epoch + 1, step + 1, steps, totals.mean_loss)
        if interrupted["set"]:
            self._save(epoch, step + 1)
            raise TrainingInterrupted(self.checkpoint, epoch, step + 1)

    def _non_finite(self, value: float, epoch: int, step: int) -> TrainingError:
        checkpoint = self.checkpoint
        last = checkpoint if checkpoint and checkpoint.exists() else None
        kept = f"; the last checkpoint ({last}) holds finite weights" if last else ""
        return TrainingError(
            f"Loss became {value} at epoch {epoch + 1}, step {step + 1} of "
            f"stage {self.stage!r}; training stopped{kept}. Try a lower learning rate."
        )

    def end_of_epoch(self, epoch: int, interrupted: dict[str, bool]) -> None:
        """Validation, the best weights so far (early stopping's count), the checkpoint."""
        val_loss, val_accuracy = validate_shards(
            self.model, self.val_loader, self.device, self.fast
        )
        loss_sum, correct, seen = self.running
        record = EpochRecord(
            stage=self.stage,
            epoch=epoch + 1,
            train_loss=loss_sum / max(seen, 1),
            train_accuracy=correct / max(seen, 1),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=max(g["lr"] for g in self.optimizer.param_groups),
            seconds=time.perf_counter() - self.epoch_started,
        )
        self.outcome.history.append(record)
        if val_accuracy is not None:
            score = (val_accuracy, -val_loss)
            if self.best_score is None or score > self.best_score:
                self.best_score, self.bad_epochs = score, 0
                self.best_state = _cpu_copy(self.model)
            else:
                self.bad_epochs += 1
        self._save(epoch + 1, 0)
        self.callback.on_epoch(record)
        # A signal during validation stops every rank, or none.
        interrupted["set"] = any_across(interrupted["set"])
        if interrupted["set"] and epoch + 1 < self.epochs:
            raise TrainingInterrupted(self.checkpoint, epoch + 1, 0)

    def _save(self, epoch: int, step: int) -> None:
        """The checkpoint at (epoch, step), on rank 0 only."""
        if not self.writes:
            return
        save_checkpoint(
            self.checkpoint,
            {
                "format": CHECKPOINT_FORMAT,
                "stage": self.stage,
                "run_key": self.run_key,
                "epoch": epoch,
                "step": step,
                "model": _cpu_copy(self.model),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": python_rng_to_list(random.getstate()),
                "history": [r.to_dict() for r in self.outcome.history],
                "best_score": list(self.best_score) if self.best_score is not None else None,
                "best_model": self.best_state,
                "bad_epochs": self.bad_epochs,
                "running": self.running,
            },
        )

    def finish(self) -> TrainOutcome:
        """The best validation epoch's weights back in the model, which is left in eval mode."""
        model, outcome = self.model, self.outcome
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
            outcome.best_epoch = 1 + max(
                range(len(outcome.history)),
                key=lambda i: (outcome.history[i].val_accuracy, -outcome.history[i].val_loss),
            )
        model.to(memory_format=torch.contiguous_format)
        model.eval()
        return outcome


def _no_hook(loss: torch.Tensor) -> torch.Tensor:
    return loss


def _at_step(
    hook: Callable[[torch.Tensor, int, int], torch.Tensor],
    epoch: int,
    step: int,
    loss: torch.Tensor,
) -> torch.Tensor:
    return hook(loss, epoch, step)


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _without_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as the bare model names it (a checkpoint of ours never has
    ``module.``; one saved from a DDP wrapper by other code would)."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


@contextlib.contextmanager
def _peer_errors(w: Any, checkpoint: Path | None) -> Iterator[None]:
    """A collective failing on a lost peer becomes a TrainingError that says so."""
    try:
        yield
    except RuntimeError as error:
        lost = peer_lost(error, w, checkpoint if checkpoint and Path(checkpoint).exists() else None)
        if w.size == 1 or lost is None:
            raise
        raise lost from error
