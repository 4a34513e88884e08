"""The training loop: pure, callback-driven, resumable, and safe to interrupt.

One loop serves every gradient stage (a head on cached features, fine-tuning,
training from scratch). What it guarantees:

- **Resumable to the bit.** A checkpoint holds the model, optimizer, scheduler,
  epoch *and step*, RNG states, history, early-stopping state and the freeze
  stage. Each epoch's shuffle comes from a generator seeded by (seed, epoch),
  so a resumed run sees the same batches and ends with the same weights as an
  uninterrupted one (on CPU, with ``num_workers=0``).
- **Atomic checkpoints.** Written to a temp file in the same folder, fsynced,
  renamed over the old one: a crash leaves the previous checkpoint loadable.
- **Interruptible.** SIGINT/SIGTERM finish the current step, save a checkpoint
  and raise ``TrainingInterrupted`` (the CLI exits 130).
- **No silent NaN.** A non-finite loss stops the run before the optimizer step,
  naming epoch and step; non-finite weights are never saved.
- **Distributed when launched so.** Inside a process group (torchrun), the model runs in
  DDP and each rank trains on its slice of the same global batches; rank 0 alone
  writes checkpoints and reports; validation sums are all-reduced, so early stopping
  stops every rank together (see `headstart.train.distributed`).
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
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from headstart.errors import TrainingError, TrainingInterrupted
from headstart.parallel import broadcast, sum_across, world
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
    global_step_loss,
    peer_lost,
    seed_rank,
    shard_batches,
    wrap_model,
)

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


def _batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool) -> list[list[int]]:
    """This epoch's batches; a trailing batch of one is merged (BatchNorm needs two)."""
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=generator).tolist()
    else:
        order = list(range(n))
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def _scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=max(total_steps, 2),
            pct_start=min(0.3, max(config.warmup_epochs * steps_per_epoch / total_steps, 0.01)),
        )
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(device: torch.device, fast: bool) -> contextlib.AbstractContextManager:
    """Reduced precision for training only on CUDA: bf16 backward on CPU is slower."""
    if fast and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def evaluate_loader(
    model: nn.Module, loader: DataLoader, device: torch.device, fast: bool = True
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over a loader."""
    total_loss, correct, count = _evaluate_sums(model, loader, device, fast)
    return total_loss / max(count, 1), correct / max(count, 1)


def _evaluate_sums(
    model: nn.Module, loader: DataLoader, device: torch.device, fast: bool
) -> tuple[float, int, int]:
    """(summed cross-entropy, correct, images): sums, so ranks can add theirs up."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode(), _autocast(device, fast):
        for inputs, targets in loader:
            inputs, targets = _to_device(inputs, targets, device, fast)
            logits = model(inputs).float()
            total_loss += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(1) == targets).sum())
            count += len(targets)
    return total_loss, correct, count


def _validate(
    model: nn.Module, loader: DataLoader | None, device: torch.device, fast: bool
) -> tuple[float | None, float | None]:
    """Validation loss and accuracy over every rank's shard (the same numbers on all)."""
    if loader is None:
        return None, None
    sums = torch.tensor(_evaluate_sums(model, loader, device, fast), dtype=torch.float64)
    total_loss, correct, count = sum_across(sums).tolist()
    return total_loss / max(count, 1), correct / max(count, 1)


def _to_device(
    inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, fast: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = inputs.to(device, non_blocking=True)
    if fast and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets.to(device, non_blocking=True)


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
    BatchNorm layers in eval mode). ``loss_hook`` lets tests inject a loss value.
    """
    w = world()
    # Rank 0 alone reports and writes; the others train in step with it, silently.
    callback = (callback or Callback()) if w.is_main else Callback()
    device = device or torch.device("cpu")
    epochs = epochs or config.epochs
    fast = config.fast
    model.to(device)
    if fast:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(param_groups)
    n = len(train_set)
    steps_per_epoch = len(_batches(n, config.batch_size, config.seed, 0, shuffle=False))
    total_steps = steps_per_epoch * epochs
    scheduler = _scheduler(optimizer, config, total_steps, steps_per_epoch)
    criterion = nn.CrossEntropyLoss(
        weight=None if class_weights is None else class_weights.to(device),
        label_smoothing=config.label_smoothing,
    )
    val_loader = None
    if val_set is not None and len(val_set):
        mine = val_set if w.size == 1 else Subset(val_set, range(w.rank, len(val_set), w.size))
        val_loader = DataLoader(
            mine, batch_size=config.batch_size * 2, num_workers=config.num_workers
        )
    class_weights = None if class_weights is None else class_weights.to(device)
    per_sample = nn.CrossEntropyLoss(
        weight=class_weights,
        label_smoothing=config.label_smoothing,
        reduction="none",
    )

    outcome = TrainOutcome()
    start_epoch, start_step = 0, 0
    best_score: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    epoch_loss, epoch_correct, epoch_seen = 0.0, 0, 0
    torch.manual_seed(config.seed)
    random.seed(config.seed)

    # Rank 0 reads the checkpoint and hands it to the others: no rank but 0 needs the file.
    state = load_checkpoint(checkpoint) if (resume and checkpoint and w.is_main) else None
    state = broadcast(state)
    if resume and checkpoint and state is None:
        callback.on_stage(stage, f"no checkpoint at {checkpoint}: starting from the beginning")
    if not resume and checkpoint and Path(checkpoint).exists():
        callback.on_stage(stage, f"replacing the earlier checkpoint {checkpoint} (not resuming)")
    if state is not None:
        if state["stage"] != stage:
            raise TrainingError(
                f"{checkpoint}: saved during stage {state['stage']!r}, cannot resume {stage!r}."
            )
        if run_key is not None and state.get("run_key") not in (None, run_key):
            raise TrainingError(
                f"{checkpoint}: saved by a run with other settings or data (config, backbone, "
                "weights or images changed); resuming would not give that run's result.",
                hint="Start afresh without {resume}, or restore the original settings.",
            )
        model.load_state_dict(_without_ddp_prefix(state["model"]))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(python_rng(state["python_rng"]))
        outcome.history = [EpochRecord(**r) for r in state["history"]]
        best_score = tuple(state["best_score"]) if state["best_score"] is not None else None
        best_state = state["best_model"]
        bad_epochs = int(state["bad_epochs"])
        epoch_loss, epoch_correct, epoch_seen = state["running"]
        outcome.resumed_from = (start_epoch, start_step)
    seed_rank(config.seed, w, start_epoch, start_step)
    run = model if w.size == 1 else wrap_model(model, device)

    def snapshot(epoch: int, step: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "stage": stage,
            "run_key": run_key,
            "epoch": epoch,
            "step": step,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": python_rng_to_list(random.getstate()),
            "history": [r.to_dict() for r in outcome.history],
            "best_score": list(best_score) if best_score is not None else None,
            "best_model": best_state,
            "bad_epochs": bad_epochs,
            "running": (epoch_loss, epoch_correct, epoch_seen),
        }

    with _interrupt_flag() as interrupted, _peer_errors(w, checkpoint):
        for epoch in range(start_epoch, epochs):
            if config.patience and bad_epochs >= config.patience:
                outcome.stopped_early = True
                break
            started = time.perf_counter()
            run.train()
            if after_train_mode is not None:
                after_train_mode()
            batches = _batches(n, config.batch_size, config.seed, epoch, shuffle=True)
            mine, padded = shard_batches(batches, w)
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                epoch_loss, epoch_correct, epoch_seen = 0.0, 0, 0
            # Its own generator: making the iterator must not draw from the global RNG,
            # or a run resumed mid-epoch would be one draw off the uninterrupted one.
            loader = DataLoader(
                train_set,
                batch_sampler=mine[first:],
                num_workers=config.num_workers,
                generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch),
            )
            for step, (inputs, targets) in enumerate(loader, start=first):
                inputs, targets = _to_device(inputs, targets, device, fast)
                with _autocast(device, fast):
                    logits = run(inputs)
                    if w.size == 1:
                        loss = criterion(logits.float(), targets)
                    else:
                        losses = per_sample(logits.float(), targets)
                if w.size > 1:  # the global batch's loss, and whether any rank was signalled
                    loss, totals = global_step_loss(
                        losses, targets, logits, padded[step], class_weights, w, interrupted["set"]
                    )
                    interrupted["set"] = totals.interrupted
                    loss_value = totals.mean_loss
                if loss_hook is not None:
                    loss = loss_hook(loss, epoch, step)
                if w.size == 1:
                    loss_value = loss.item()
                if not math.isfinite(loss_value):
                    last = checkpoint if checkpoint and checkpoint.exists() else None
                    kept = f"; the last checkpoint ({last}) holds finite weights" if last else ""
                    raise TrainingError(
                        f"Loss became {loss_value} at epoch {epoch + 1}, step {step + 1} of "
                        f"stage {stage!r}; training stopped{kept}. Try a lower learning rate."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if w.size == 1:
                    epoch_loss += loss_value * len(targets)
                    epoch_correct += int((logits.detach().argmax(1) == targets).sum())
                    epoch_seen += len(targets)
                else:
                    epoch_loss += totals.loss_sum
                    epoch_correct += totals.correct
                    epoch_seen += totals.seen
                callback.on_step(epoch + 1, step + 1, len(batches), loss_value)
                if interrupted["set"]:
                    if checkpoint is not None and w.is_main:
                        save_checkpoint(checkpoint, snapshot(epoch, step + 1))
                    raise TrainingInterrupted(checkpoint, epoch, step + 1)

            val_loss, val_accuracy = _validate(model, val_loader, device, fast)
            record = EpochRecord(
                stage=stage,
                epoch=epoch + 1,
                train_loss=epoch_loss / max(epoch_seen, 1),
                train_accuracy=epoch_correct / max(epoch_seen, 1),
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                lr=max(g["lr"] for g in optimizer.param_groups),
                seconds=time.perf_counter() - started,
            )
            outcome.history.append(record)
            if val_accuracy is not None:
                score = (val_accuracy, -val_loss)
                if best_score is None or score > best_score:
                    best_score, bad_epochs = score, 0
                    best_state = {
                        k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                    }
                else:
                    bad_epochs += 1
            if checkpoint is not None and w.is_main:
                save_checkpoint(checkpoint, snapshot(epoch + 1, 0))
            callback.on_epoch(record)
            if w.size > 1:  # a signal during validation stops every rank, or none
                interrupted["set"] = bool(sum_across(torch.tensor([float(interrupted["set"])])))
            if interrupted["set"] and epoch + 1 < epochs:  # the signal came during validation
                raise TrainingInterrupted(checkpoint, epoch + 1, 0)

    if best_state is not None:
        model.load_state_dict(best_state)
        outcome.best_epoch = 1 + max(
            range(len(outcome.history)),
            key=lambda i: (outcome.history[i].val_accuracy, -outcome.history[i].val_loss),
        )
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return outcome


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
