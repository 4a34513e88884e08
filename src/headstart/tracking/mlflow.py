"""``MLflowLogger``: a run with its parameters, metrics and artifacts in MLflow."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError
from headstart.tracking.common import (
    confusion_png,
    epoch_scalars,
    final_metrics,
    plan_text,
    require,
    scalar,
)
from headstart.train.callbacks import Callback

__all__ = ["MLflowLogger"]

PARENT_TAG = "mlflow.parentRunId"  # how MLflow nests a child run under its parent


class MLflowLogger(Callback):
    """Logs to the MLflow tracking server or store at ``tracking_uri`` (``file:DIR``,
    ``http://host:port``, ``sqlite:///...``): the job's parameters, the plan as
    ``plan.txt``, per-epoch ``train/loss`` ... ``val/accuracy`` (step = epochs so far,
    across stages), the final ``test/...`` metrics, ``plots/confusion_matrix.png`` and
    the model folder under ``model/``. In a comparison the comparison is the parent run
    and each of its runs a child; call :meth:`close` when the comparison is done.

    Uses its own ``MlflowClient``, so it neither reads nor changes mlflow's global
    active run or tracking URI."""

    def __init__(
        self, tracking_uri: str, experiment: str = "headstart", run_name: str | None = None
    ) -> None:
        client_module = require("mlflow.tracking", "mlflow")
        if tracking_uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked; a file: URI is that asking.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.tracking_uri = tracking_uri
        try:
            self.client = client_module.MlflowClient(tracking_uri=tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(experiment)
            )
        except Exception as exc:  # MlflowException, ImportError of a store's driver, OSError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"--log mlflow:{tracking_uri} cannot open that MLflow store: {first}",
                hint="A file: store or an http:// server works with headstart[mlflow]; "
                "sqlite: and other databases need the full mlflow package.",
            ) from exc
        self.run_name = run_name
        self.parent_id: str | None = None  # the job's run, or the comparison's
        self.child_id: str | None = None  # the comparison's current run
        self._epochs = 0

    @property
    def run_id(self) -> str:
        """The run events go to now (started on the first event)."""
        if self.child_id is not None:
            return self.child_id
        if self.parent_id is None:
            run = self.client.create_run(self.experiment_id, run_name=self.run_name)
            self.parent_id = run.info.run_id
        return self.parent_id

    def on_job_start(self, params: dict[str, Any]) -> None:
        self._log_params(self.run_id, params)

    def on_plan(self, plan: Any) -> None:
        self.client.log_text(self.run_id, plan_text(plan) + "\n", "plan.txt")

    def on_epoch(self, record: Any) -> None:
        self._epochs += 1
        self._log_metrics(self.run_id, epoch_scalars(record), self._epochs)

    def on_job_end(self, result: Any) -> None:
        run_id = self.run_id
        self._log_metrics(run_id, final_metrics(result), self._epochs)
        with tempfile.TemporaryDirectory() as tmp:
            png = confusion_png(result, Path(tmp))
            if png is not None:
                self.client.log_artifact(run_id, str(png), "plots")
        folder = getattr(result, "folder", None)
        if folder is not None:
            self.client.log_artifacts(run_id, str(folder), "model")
        self.close()

    def on_run_start(self, run: str, index: int, total: int) -> None:
        parent = self.run_id  # the comparison's run, started with its first run
        child = self.client.create_run(self.experiment_id, run_name=run, tags={PARENT_TAG: parent})
        self.child_id = child.info.run_id
        self._epochs = 0

    def on_run_end(self, record: dict[str, Any], reused: bool) -> None:
        if self.child_id is None:  # a reused run: it did not start here, log it anyway
            self.on_run_start(str(record.get("id", "run")), 0, 0)
        child, self.child_id = self.child_id, None
        assert child is not None
        keys = ("backbone", "strategy", "labels_per_class", "train_images", "seed")
        self._log_params(child, {k: record[k] for k in keys if k in record})
        numbers = {
            f"test/{k}": float(record[k])
            for k in ("accuracy", "balanced_accuracy", "train_seconds")
            if isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)
        }
        self._log_metrics(child, numbers, self._epochs)
        self.client.set_tag(child, "headstart.reused", str(bool(reused)).lower())
        ok = record.get("status", "ok") == "ok"
        self.client.set_terminated(child, status="FINISHED" if ok else "FAILED")

    def close(self, failed: bool = False) -> None:
        """End the open runs (a comparison's parent; a job's run ends with the job), as
        FAILED when the work they log stopped on an error."""
        for run_id in (self.child_id, self.parent_id):
            if run_id is not None:
                self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
        self.child_id = self.parent_id = None

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(scalar(v))) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(run_id, params=items[start : start + 100])

    def _log_metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000])
