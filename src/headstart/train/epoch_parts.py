"""The parts of an epoch that are not its order of work: the learning-rate schedule,
the precision a step runs in, moving a batch to the device, and scoring a loader (on
one process, or summed over every rank's shard)."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from headstart.parallel import sum_across
from headstart.train.config import TrainConfig

__all__ = ["autocast_for", "evaluate_loader", "lr_scheduler", "to_device", "validate_shards"]


def lr_scheduler(
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


def autocast_for(device: torch.device, fast: bool) -> contextlib.AbstractContextManager:
    """Reduced precision for training only on CUDA: bf16 backward on CPU is slower."""
    if fast and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def evaluate_loader(
    model: nn.Module, loader: DataLoader, device: torch.device, fast: bool = True
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over a loader."""
    total_loss, correct, count = evaluate_sums(model, loader, device, fast)
    return total_loss / max(count, 1), correct / max(count, 1)


def evaluate_sums(
    model: nn.Module, loader: DataLoader, device: torch.device, fast: bool
) -> tuple[float, int, int]:
    """(summed cross-entropy, correct, images): sums, so ranks can add theirs up."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.inference_mode(), autocast_for(device, fast):
        for inputs, targets in loader:
            inputs, targets = to_device(inputs, targets, device, fast)
            logits = model(inputs).float()
            total_loss += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(1) == targets).sum())
            count += len(targets)
    return total_loss, correct, count


def validate_shards(
    model: nn.Module, loader: DataLoader | None, device: torch.device, fast: bool
) -> tuple[float | None, float | None]:
    """Validation loss and accuracy over every rank's shard (the same numbers on all)."""
    if loader is None:
        return None, None
    sums = torch.tensor(evaluate_sums(model, loader, device, fast), dtype=torch.float64)
    total_loss, correct, count = sum_across(sums).tolist()
    return total_loss / max(count, 1), correct / max(count, 1)


def to_device(
    inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, fast: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = inputs.to(device, non_blocking=True)
    if fast and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets.to(device, non_blocking=True)
