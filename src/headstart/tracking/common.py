"""What both loggers share: reading a ``--log`` spec, the optional import, and turning
a job's result into numbers, text and a confusion-matrix picture."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from headstart.errors import ConfigError

KINDS = ("tensorboard", "mlflow")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\- ]")
FORMS = "tensorboard:DIR or mlflow:URI (e.g. mlflow:file:./mlruns or mlflow:http://host:5000)"


def require(module: str, extra: str) -> ModuleType:
    """Import an optional package, or say in one line which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"--log {extra} needs the {extra} package: pip install 'headstart[{extra}]'"
        ) from None


def parse_log_spec(spec: str) -> tuple[str, str]:
    """``"tensorboard:DIR"`` -> ``("tensorboard", "DIR")``; the target may hold colons."""
    kind, _, target = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS or not target.strip():
        what = "names no target" if kind in KINDS else "names no known kind"
        raise ConfigError(f"--log {spec!r} {what}: give {FORMS}.")
    return kind, target.strip()


EXTRAS = {"tensorboard": ("tensorboard", "torch.utils.tensorboard"), "mlflow": ("mlflow.tracking",)}


def check_specs(specs: list[str] | tuple[str, ...] | None) -> None:
    """Every spec well formed and its package installed, without logging anything yet."""
    for spec in specs or ():
        kind, _ = parse_log_spec(spec)
        for module in EXTRAS[kind]:
            require(module, kind)


def loggers_from_specs(specs: list[str] | tuple[str, ...] | None, **options: Any) -> list[Any]:
    """One logger per spec (``tensorboard:DIR``, ``mlflow:URI``), every spec checked
    before any logger is made; ``options`` (``experiment``, ``run_name``) go to MLflow."""
    check_specs(specs)
    parsed = [parse_log_spec(spec) for spec in specs or ()]
    loggers: list[Any] = []
    for kind, target in parsed:
        if kind == "tensorboard":
            from headstart.tracking.tensorboard import TensorBoardLogger

            loggers.append(TensorBoardLogger(target))
        else:
            from headstart.tracking.mlflow import MLflowLogger

            loggers.append(MLflowLogger(target, **options))
    return loggers


def scalar(value: Any) -> str | int | float | bool | None:
    """A parameter value as a tracker stores it: scalars kept, anything else as text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def final_metrics(result: Any) -> dict[str, float]:
    """The job's numeric test metrics as ``test/NAME`` (``test/data/NAME`` for its
    data block), the per-class ones from the evaluation as ``test/class/NAME/f1`` etc."""
    metrics: dict[str, float] = {}

    def add(prefix: str, mapping: Any) -> None:
        for name, value in (mapping or {}).items():
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                metrics[f"{prefix}{name}"] = float(value)
            elif isinstance(value, dict):
                add(f"{prefix}{name}/", value)

    add("test/", getattr(result, "metrics", None))
    evaluation = getattr(result, "evaluation", None) or {}
    for row in evaluation.get("per_class", []):
        name = _UNSAFE.sub("_", str(row["class"]))  # trackers allow few characters in names
        for key in ("precision", "recall", "f1"):
            metrics[f"test/class/{name}/{key}"] = float(row[key])
    return metrics


def class_names(result: Any) -> list[str]:
    evaluation = getattr(result, "evaluation", None) or {}
    if evaluation.get("classes"):
        return [str(c) for c in evaluation["classes"]]
    if evaluation.get("per_class"):
        return [str(row["class"]) for row in evaluation["per_class"]]
    return [str(c) for c in getattr(getattr(result, "classifier", None), "classes_", [])]


def confusion_png(result: Any, folder: Path) -> Path | None:
    """The test confusion matrix drawn into ``folder``, or None when there is none."""
    evaluation = getattr(result, "evaluation", None) or {}
    matrix = evaluation.get("confusion_matrix")
    if not matrix:
        return None
    from headstart.evaluation.plots import save_confusion_matrix

    return save_confusion_matrix(
        matrix, class_names(result), folder / "confusion_matrix.png", title="test"
    )


def plan_text(plan: Any) -> str:
    """The plan as ``headstart train`` prints it."""
    return plan.format() if hasattr(plan, "format") else str(plan)


def epoch_scalars(record: Any) -> dict[str, float]:
    values = {
        "train/loss": record.train_loss,
        "train/accuracy": record.train_accuracy,
        "val/loss": record.val_loss,
        "val/accuracy": record.val_accuracy,
        "train/lr": record.lr,
    }
    return {name: float(v) for name, v in values.items() if v is not None}
