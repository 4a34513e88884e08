"""Crash safety, proven: SIGKILL during checkpoint writes, a full disk during saves.

Kill-and-resume equality and SIGINT/SIGTERM interrupt checkpoints (exit 130) are
proven in test_engine.py; this file covers what happens to the *files*.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from filelock import FileLock

from headstart._internal.atomic import atomic_write
from headstart.data.arrays import from_arrays
from headstart.estimator.image_classifier import ImageClassifier
from headstart.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint

TINY = "test_efficientnet"


def checkpoint_state(epoch: int) -> dict[str, Any]:
    """About 4 MB, different for every epoch: long enough to be killed mid-write."""
    generator = torch.Generator().manual_seed(epoch)
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": {"w": torch.randn(1_000_000, generator=generator)},
    }


def temp_files(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


# ------------------------------------------------------------------- SIGKILL


def _save_forever(path: Path, states: list[dict[str, Any]]) -> None:
    """The child: overwrite one checkpoint with alternating contents until killed."""
    index = 0
    while True:
        save_checkpoint(path, states[index % 2])
        index += 1


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_leaves_an_unloadable_checkpoint(
    tmp_path: Path,
) -> None:
    """60 children, each SIGKILLed at a random moment of an endless save loop.

    After every kill the checkpoint exists, loads, and is exactly one of the two
    states written; temp files left by a kill mid-write are cleaned by the next
    save, so after the last one nothing stray remains.
    """
    path = tmp_path / "checkpoint.pt"
    states = [checkpoint_state(0), checkpoint_state(1)]
    rng = random.Random(0)
    unloadable: list[str] = []
    checked = left_behind = 0
    save_checkpoint(path, states[1])  # from here on a checkpoint must always be there
    for kill in range(60):
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            try:
                _save_forever(path, states)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.06))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        left_behind += bool(temp_files(tmp_path, path.name))
        try:
            state = load_checkpoint(path)
        except Exception as error:  # noqa: BLE001 - every failure is what we count
            unloadable.append(f"kill {kill}: {error}")
            continue
        if state is None:
            unloadable.append(f"kill {kill}: the checkpoint is gone")
            continue
        assert torch.equal(state["model"]["w"], states[state["epoch"]]["model"]["w"])
        checked += 1

    assert unloadable == []
    assert checked == 60  # never missing, never half-written
    assert left_behind >= 1, "no kill landed mid-write: the test proved nothing"
    save_checkpoint(path, states[0])  # the next successful save cleans up
    assert temp_files(tmp_path, path.name) == []
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_stale_temp_files_go_and_live_or_foreign_ones_stay(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    stale = tmp_path / ".checkpoint.pt.k1ll3d_x.tmp"  # its writer is dead: its lock is free
    live = tmp_path / ".checkpoint.pt.writing.tmp"  # another process is writing it now
    foreign = tmp_path / ".checkpoint.pt.old.abc123.tmp"  # the temp of `checkpoint.pt.old`
    orphan = tmp_path / ".checkpoint.pt.gone.tmp.lock"  # a writer killed as it finished
    for file in (stale, live, foreign, orphan, Path(f"{stale}.lock")):
        file.write_bytes(b"partial")
    with FileLock(f"{live}.lock"):  # what a live writer holds while it writes
        save_checkpoint(path, checkpoint_state(0))
        assert not stale.exists() and not orphan.exists()
        assert live.exists() and foreign.exists()
    # the writer finished or died: its lock is free, and the next save takes both files
    save_checkpoint(path, checkpoint_state(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, foreign.name])
    assert load_checkpoint(path)["epoch"] == 1


def test_a_write_in_another_process_is_not_disturbed_by_a_concurrent_one(tmp_path: Path) -> None:
    """Two processes write one file at once (two runs sharing a feature cache): the second
    one's clean-up leaves the first one's temp file alone, both finish, nothing stays."""
    path = tmp_path / "features.npy"
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest

        def slowly(handle: Any) -> None:
            handle.write(b"first ")
            time.sleep(0.5)
            handle.write(b"writer")

        code = 1
        try:
            atomic_write(path, slowly)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while not temp_files(tmp_path, path.name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert temp_files(tmp_path, path.name), "the child never started writing"
    atomic_write(path, lambda handle: handle.write(b"second writer"))
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert path.read_bytes() == b"first writer"  # it finished after us, unharmed
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# ----------------------------------------------------------------- disk full


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def disk_fills_up(
    monkeypatch: pytest.MonkeyPatch, at_file: int, where: str, after_bytes: int = 4096
) -> None:
    """ENOSPC from the real file layer: the ``at_file``-th file opened for writing accepts
    ``after_bytes`` bytes and then fails in ``write``, or fails in its ``fsync``."""
    real_fdopen, real_fsync = os.fdopen, os.fsync
    opened = {"files": 0, "failing_fd": None}

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        opened["files"] += 1
        if opened["files"] != at_file:
            return handle
        if where == "fsync":
            opened["failing_fd"] = fd
            return handle
        real_write, written = handle.write, [0]

        def write(data: Any) -> int:
            written[0] += len(data)
            if written[0] > after_bytes:
                raise no_space()
            return real_write(data)

        handle.write = write
        return handle

    def fsync(fd: int) -> None:
        if fd == opened["failing_fd"]:
            raise no_space()
        real_fsync(fd)

    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("where, after_bytes", [("write", 0), ("write", 2_000_000), ("fsync", 0)])
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, after_bytes: int
) -> None:
    """test_engine.py replaces torch.save; here torch.save itself meets ENOSPC from the
    file it writes to (at the start, halfway, or when the data is flushed to disk)."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, checkpoint_state(0))
    before = path.read_bytes()

    with monkeypatch.context() as patch:
        disk_fills_up(patch, at_file=1, where=where, after_bytes=after_bytes)
        with pytest.raises(OSError) as failed:
            save_checkpoint(path, checkpoint_state(1))
    assert failed.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]

    save_checkpoint(path, checkpoint_state(1))  # space again: the next save works
    assert load_checkpoint(path)["epoch"] == 1


def _fit(classes: int, seed: int) -> tuple[ImageClassifier, Any]:
    images = np.random.default_rng(seed).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    dataset = from_arrays(images, [i % classes for i in range(12)])
    config = ImageClassifier(TINY).resolved_config().replace(image_size=32, device="cpu", seed=seed)
    return ImageClassifier(TINY, config=config, weights="none").fit(dataset), dataset


@pytest.fixture(scope="module")
def two_models() -> tuple[ImageClassifier, ImageClassifier, Any]:
    """A 2-class model (saved first) and a 3-class one (whose save fails)."""
    old, dataset = _fit(classes=2, seed=0)
    new, _ = _fit(classes=3, seed=1)
    return old, new, dataset


@pytest.mark.parametrize(
    "at_file, where",
    [(1, "write"), (2, "write"), (2, "fsync")],
    ids=["weights-write", "metadata-write", "metadata-fsync"],
)
def test_a_failed_model_save_leaves_the_previous_model_loadable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    two_models: tuple[ImageClassifier, ImageClassifier, Any],
    at_file: int,
    where: str,
) -> None:
    """A model is two files. Before this was fixed, ENOSPC on headstart.json left the new
    weights beside the old description: the old model no longer loaded (or, with the same
    classes, silently loaded the new weights)."""
    old, new, dataset = two_models
    folder = old.save(tmp_path / "model")
    files_before = {p.name: p.read_bytes() for p in folder.iterdir()}
    predicted = ImageClassifier.load(folder).predict_proba(dataset)

    with monkeypatch.context() as patch:
        disk_fills_up(patch, at_file=at_file, where=where, after_bytes=100)
        with pytest.raises(OSError) as failed:
            new.save(folder)
    assert failed.value.errno == errno.ENOSPC

    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files_before  # no temp files
    reloaded = ImageClassifier.load(folder)
    assert reloaded.classes_ == ["0", "1"]
    np.testing.assert_array_equal(reloaded.predict_proba(dataset), predicted)

    new.save(folder)  # space again: the new model replaces the old one whole
    assert ImageClassifier.load(folder).classes_ == ["0", "1", "2"]
