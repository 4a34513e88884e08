"""Experiment tracking: training runs logged to TensorBoard or MLflow, as callbacks.

Each logger is a ``Callback``: pass it to a training job (or ``CallbackList`` it with
others) and it records the parameters, the plan, per-epoch losses and validation
metrics, the final test metrics, the confusion matrix and the model folder. The
tracking packages are optional extras, imported only when a logger is made."""

from __future__ import annotations

from headstart.tracking.common import check_specs, loggers_from_specs, parse_log_spec
from headstart.tracking.mlflow import MLflowLogger
from headstart.tracking.tensorboard import TensorBoardLogger

__all__ = [
    "MLflowLogger",
    "TensorBoardLogger",
    "check_specs",
    "loggers_from_specs",
    "parse_log_spec",
]
