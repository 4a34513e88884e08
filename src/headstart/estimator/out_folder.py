"""The folder a training run writes its model to, claimed before the run starts.

A run took hours by the time it saved; it used to find out only then that the folder
could not be written, and it replaced a model already there without a word (leaving
that model's ``evaluation.json`` beside the new one), while a second run to the same
folder shared its checkpoints. ``ModelFolder`` settles all of that before the first
image is loaded: the folder is written to once (a probe file), a model already in it
is refused unless ``overwrite`` is given, and a lock held for the whole run keeps a
second run out. If the final save still fails, the model goes to a folder of its own
in the system's temp folder and the error says where.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from headstart.errors import OutputError
from headstart.estimator.model_files import META_FILE, WEIGHTS_FILE

__all__ = ["LOCK_FILE", "ModelFolder"]

LOCK_FILE = ".headstart.lock"
CHECKPOINTS = "checkpoints"
MODEL_FILES = (META_FILE, WEIGHTS_FILE)  # what makes a folder a model folder
# What `headstart evaluate --out` writes about a model: stale once the model is replaced.
DESCRIBING_FILES = ("evaluation.json", "confusion_matrix.png")
EXPORTED_FILES = ("*.onnx", "*.onnx.json")  # what `headstart export` writes into a run


def check_writable(folder: Path) -> None:
    """Make ``folder`` (and its parents) and write a file in it, or raise ``OutputError``
    naming the folder and the reason: a read-only disk, a file in the way, no permission."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(
            f"{folder}: cannot write there ({exc.strerror or exc}); nothing was trained.",
            hint="Choose a folder you can write to with {out}.",
        ) from exc


class ModelFolder:
    """``with ModelFolder(out, overwrite=..., resume=...) as folder:`` claims ``out`` for
    one training run (see the module's docstring); ``folder.save(clf)`` saves the model.

    ``resume`` with a checkpoint in the folder continues that run: it is not an overwrite.
    """

    def __init__(self, folder: Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.folder = Path(folder).expanduser()
        self.overwrite = overwrite
        self.resume = resume
        self._lock: FileLock | None = None
        self._created = False

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS

    def __enter__(self) -> ModelFolder:
        self._created = not self.folder.exists()
        check_writable(self.folder)
        lock = FileLock(str(self.folder / LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise OutputError(
                f"{self.folder}: another training run is writing to this folder now "
                f"(it holds {LOCK_FILE}).",
                hint="Wait for it to finish, or choose another {out}.",
            ) from None
        self._lock = lock
        try:
            self._check_for_a_model()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _check_for_a_model(self) -> None:
        resuming = self.resume and self.checkpoints.is_dir() and any(self.checkpoints.iterdir())
        held = [name for name in MODEL_FILES if (self.folder / name).exists()]
        if held and not (self.overwrite or resuming):
            raise OutputError(
                f"{self.folder}: holds a trained model already ({', '.join(held)}); "
                "training would replace it.",
                hint="Give {overwrite} to replace it, or choose another {out}.",
            )
        if self.overwrite and not resuming:  # another run's checkpoints are not this one's
            shutil.rmtree(self.checkpoints, ignore_errors=True)

    def save(self, clf: Any) -> Path:
        """Save ``clf`` here, then drop the checkpoints and the files that described the
        model it replaced. If the save fails, save it to a new folder in the temp folder
        and raise ``OutputError`` saying where it is (the checkpoints stay too)."""
        try:
            clf.save(self.folder)
        except OSError as exc:
            raise OutputError(self._rescue(clf, exc)) from exc
        shutil.rmtree(self.checkpoints, ignore_errors=True)  # the run is complete
        for name in DESCRIBING_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
        for pattern in EXPORTED_FILES:  # exported from the replaced model: they'd answer as it
            for stale in self.folder.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        return self.folder

    def _rescue(self, clf: Any, exc: OSError) -> str:
        """Where the trained model went when ``folder`` refused it, as a message."""
        failed = f"{self.folder}: the trained model could not be saved there ({exc})"
        try:
            spare = Path(tempfile.mkdtemp(prefix="headstart-unsaved-"))
            clf.save(spare)
        except OSError as second:
            kept = self.checkpoints if self.checkpoints.is_dir() else None
            where = f"; the checkpoints in {kept} keep it" if kept else ""
            return f"{failed}, nor in the temp folder ({second}){where}."
        return f"{failed}; it was saved to {spare} instead."

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._release()
        if self._created:  # a run that saved nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                self.folder.rmdir()

    def _release(self) -> None:
        """Remove the lock file, then release it (while held, no one else uses it), so
        the finished model folder holds only the model."""
        if self._lock is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._lock.lock_file)
        self._lock.release()
        self._lock = None
