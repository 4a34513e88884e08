"""``TensorBoardLogger``: a run's scalars, texts and confusion matrix in an events file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from headstart.tracking.common import (
    confusion_png,
    epoch_scalars,
    final_metrics,
    plan_text,
    require,
    scalar,
)
from headstart.train.callbacks import Callback

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(Callback):
    """Writes under ``log_dir`` (one subfolder per run of a comparison): scalars
    ``train/loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy``, ``train/lr`` per
    epoch (counted across stages), ``test/...`` at the end; the parameters, the plan and
    the model folder as text; the confusion matrix as an image. TensorBoard keeps no
    files, so the model folder is named, not copied."""

    def __init__(self, log_dir: str | Path) -> None:
        require("tensorboard", "tensorboard")
        self._writer_class = require("torch.utils.tensorboard", "tensorboard").SummaryWriter
        self.log_dir = Path(log_dir)
        self._writer: Any = None
        self._folder = self.log_dir
        self._epochs = 0

    @property
    def writer(self) -> Any:
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(self._folder))
        return self._writer

    def on_job_start(self, params: dict[str, Any]) -> None:
        rows = "\n".join(f"| {k} | {scalar(v)} |" for k, v in sorted(params.items()))
        self.writer.add_text("params", f"| parameter | value |\n|---|---|\n{rows}")

    def on_plan(self, plan: Any) -> None:
        text = "\n".join(f"    {line}" for line in plan_text(plan).splitlines())
        self.writer.add_text("plan", text)  # indented: markdown shows it as written

    def on_stage(self, name: str, detail: str) -> None:
        self.writer.add_text("stages", f"{name}: {detail}", global_step=self._epochs)

    def on_epoch(self, record: Any) -> None:
        self._epochs += 1
        for tag, value in epoch_scalars(record).items():
            self.writer.add_scalar(tag, value, self._epochs)
        self.writer.flush()

    def on_job_end(self, result: Any) -> None:
        for tag, value in final_metrics(result).items():
            self.writer.add_scalar(tag, value, self._epochs)
        with tempfile.TemporaryDirectory() as tmp:
            png = confusion_png(result, Path(tmp))
            if png is not None:
                import numpy as np
                from PIL import Image

                with Image.open(png) as image:
                    pixels = np.asarray(image.convert("RGB"))
                self.writer.add_image("confusion_matrix", pixels, self._epochs, dataformats="HWC")
        folder = getattr(result, "folder", None)
        if folder is not None:
            self.writer.add_text("model_folder", str(folder))
        self.close()

    # A comparison: each run in its own subfolder, so TensorBoard shows them side by side.
    def on_run_start(self, run: str, index: int, total: int) -> None:
        self.close()
        self._folder = self.log_dir / run.replace("/", "_")
        self._epochs = 0

    def on_run_end(self, record: dict[str, Any], reused: bool) -> None:
        if record.get("status") == "ok" and not reused:
            for name in ("accuracy", "balanced_accuracy", "train_seconds"):
                if isinstance(record.get(name), (int, float)):
                    self.writer.add_scalar(f"test/{name}", float(record[name]), self._epochs)
        self.close()
        self._folder = self.log_dir

    def close(self, failed: bool = False) -> None:
        """Flush and close the events file (``failed`` changes nothing: events stay)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
