"""The exceptions headstart raises on purpose.

Every error a user can cause is a ``HeadstartError``; the CLI catches exactly
this family, prints one line and exits non-zero. Anything else is a bug.

    HeadstartError
    ├── ConfigError        a parameter is out of range or of the wrong kind
    ├── DataError          a dataset, image file, CSV, IDX file or split is unusable
    │   └── ImageDecodeError   one image could not be decoded (carries path and reason)
    ├── WeightsError       weights are missing, corrupt, unsafe or do not fit the model
    ├── BackboneError      an unknown backbone name or an impossible backbone request
    ├── NotFittedError     an estimator was used before ``fit``
    └── TrainingError      training stopped (non-finite loss, interrupted run)
        └── TrainingInterrupted  SIGINT/SIGTERM arrived; a checkpoint was saved first
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BackboneError",
    "ConfigError",
    "DataError",
    "HeadstartError",
    "ImageDecodeError",
    "NotFittedError",
    "TrainingError",
    "TrainingInterrupted",
    "WeightsError",
]


class HeadstartError(Exception):
    """Base class of every error headstart raises for bad input or state."""


class ConfigError(HeadstartError, ValueError):
    """A configuration value is invalid."""


class DataError(HeadstartError):
    """A dataset or data file is unusable."""


class ImageDecodeError(DataError):
    """One image could not be decoded into an RGB picture."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class WeightsError(HeadstartError):
    """Weights could not be loaded safely or do not fit the model."""


class BackboneError(HeadstartError):
    """A backbone cannot be built as asked."""


class NotFittedError(HeadstartError, AttributeError):
    """An estimator method that needs a fitted model was called before ``fit``."""


class TrainingError(HeadstartError):
    """Training could not continue (for example a non-finite loss)."""


class TrainingInterrupted(TrainingError):  # noqa: N818 - it is an error for the CLI
    """SIGINT or SIGTERM arrived; a checkpoint was saved first."""

    def __init__(self, checkpoint: Path | None, epoch: int, step: int) -> None:
        where = f"; resume from {checkpoint}" if checkpoint else ""
        super().__init__(f"Interrupted at epoch {epoch + 1}, step {step}{where}.")
        self.checkpoint = checkpoint
