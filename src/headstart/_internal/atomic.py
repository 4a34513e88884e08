"""Atomic file writes: a crash at any moment leaves the old file or the new one, never half.

Every file headstart writes (models, checkpoints, cached features, reports, plots)
goes through here: a temp file in the same folder, fsync, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, so stale temp files stay
    fcntl = None

__all__ = ["TEMP_FILE", "atomic_write", "atomic_write_files", "unlink_unless_locked"]

TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]+\.tmp")  # the temp files made by _locked_temp


def atomic_write(path: Path, write: Callable) -> None:
    """Write via a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never half.
    Temp files that a killed writer of ``path`` left behind are removed first.
    """
    atomic_write_files([(Path(path), write)])


def atomic_write_files(files: Sequence[tuple[Path, Callable]]) -> None:
    """Write files that belong together so that a failure while writing replaces none.

    Every file is written and fsynced to its own temp file first; only then are all
    renamed into place. A model's weights and its description must never end up half
    old, half new because the disk filled up while the second was being written.
    """
    staged: list[tuple[int, str, Path]] = []  # (locked fd, temp path, target)
    try:
        for target, write in files:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(path)
            fd, tmp = _locked_temp(path)
            staged.append((fd, tmp, path))
            # mkstemp makes 0600 files; a report or model should read like any other file.
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666 & ~_UMASK)
            # closefd=False: the descriptor, and with it the lock, stays open until renamed.
            with os.fdopen(fd, "wb", closefd=False) as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        for _, tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for _, tmp, _ in staged:
            with contextlib.suppress(OSError):  # already renamed, or never created
                os.unlink(tmp)
        raise
    finally:
        for fd, _, _ in staged:
            with contextlib.suppress(OSError):
                os.close(fd)
    for folder in {path.parent for _, _, path in staged}:
        with contextlib.suppress(OSError):  # make the renames themselves durable
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _locked_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside ``path``, locked for as long as this writer lives.

    The lock is what tells `_remove_stale_temps` in another process that the file is
    still being written; the kernel drops it when the writer dies, however it dies.
    """
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a cleaner took it in the instant before the lock
            os.close(fd)
            continue
        except OSError:  # no locks on this filesystem: then nobody removes temp files
            return fd, tmp
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)  # removed by a cleaner before we locked it: take another


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` whose writer was killed mid-write (SIGKILL, OOM).

    Only files no process holds a lock on are taken, so a concurrent writer of the
    same file (two runs sharing a feature cache) is never disturbed.
    """
    if fcntl is None:
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")
    try:
        names = [name for name in os.listdir(path.parent) if pattern.fullmatch(name)]
    except OSError:
        return
    for name in names:
        unlink_unless_locked(path.parent / name)


def unlink_unless_locked(stale: Path) -> None:
    """Delete a temp file unless a live writer holds its lock (see `_locked_temp`)."""
    if fcntl is None:
        return
    try:
        fd = os.open(stale, os.O_RDONLY)
    except OSError:
        return  # removed meanwhile, or not ours to read
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(stale)
    except OSError:
        pass  # a live writer holds it (or it is gone already): leave it
    finally:
        os.close(fd)
