"""Checkpoints: written atomically, read with ``weights_only=True``, and holding every
state a resumed run needs to end where the uninterrupted one would."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from headstart._internal.atomic import atomic_write
from headstart.errors import TrainingError

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "python_rng",
    "python_rng_to_list",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint read with ``weights_only=True``; None when absent."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any corruption: report it, never guess
        raise TrainingError(f"{path}: checkpoint cannot be read ({exc}).") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a headstart checkpoint (format {CHECKPOINT_FORMAT}).")
    return state


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    for name, tensor in state["model"].items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingError(f"Refusing to save non-finite weights ({name}) to {path}.")
    atomic_write(path, lambda handle: _torch_save(state, handle))


def _torch_save(state: dict[str, Any], handle: Any) -> None:
    """``torch.save``, with a failed write surfacing as the OSError it is.

    When the file refuses a write halfway (disk full), torch's zip writer fails again
    while closing and raises a RuntimeError ("unexpected pos") that hides the OSError;
    the CLI reports an OSError in one line, a RuntimeError as a traceback.
    """
    try:
        torch.save(state, handle)
    except RuntimeError as error:
        if isinstance(error.__context__, OSError):
            raise error.__context__ from None
        raise


def python_rng_to_list(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_rng(state: Sequence) -> tuple:
    version, internal, gauss = state
    return (int(version), tuple(int(v) for v in internal), gauss)
