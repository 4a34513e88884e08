"""Atomic file writes: a crash at any moment leaves the old file or the new one, never half.

Every file headstart writes (models, checkpoints, cached features, reports, plots)
goes through here: a temp file in the same folder, fsync, then ``os.replace``.

A writer killed mid-write (SIGKILL, the OOM killer) leaves its temp file behind; the
next writer of the same file removes it. To tell a dead writer's temp file from a live
one's, each writer holds a lock (``filelock``: flock on POSIX, msvcrt on Windows) on a
lock file beside its temp file for as long as it writes; the operating system drops
the lock when the process dies, however it dies. A temp file whose lock can be taken
is stale. Both files go when the write ends, so nothing accumulates beside the target.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["TEMP_FILE", "atomic_write", "atomic_write_files", "unlink_unless_locked"]

# The temp files made by `_locked_temp` and their lock files: ``.NAME.TOKEN.tmp[.lock]``.
TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]+\.tmp(\.lock)?")
_LOCK_SUFFIX = ".lock"
_WRITER_WAIT_S = 5.0  # a cleaner holds a lock for two unlinks; more means something odd


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
    with contextlib.ExitStack() as locks:  # released last: after the renames or the cleanup
        staged: list[tuple[Path, Path]] = []  # (temp, target)
        path = Path(files[0][0]) if files else Path()
        try:
            for target, write in files:
                path = Path(target)
                path.parent.mkdir(parents=True, exist_ok=True)
                _remove_stale_temps(path)
                fd, tmp = locks.enter_context(_locked_temp(path))
                staged.append((tmp, path))
                # Closed before the rename: Windows cannot rename a file that is open.
                with os.fdopen(fd, "wb") as handle:
                    write(handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            for tmp, path in staged:
                os.replace(tmp, path)
        except BaseException as error:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):  # already renamed, or never created
                    os.unlink(tmp)
            if isinstance(error, OSError) and error.filename is None and error.errno:
                raise _naming(error, path) from error
            raise
    for folder in {path.parent for _, path in staged}:
        with contextlib.suppress(OSError):  # make the renames themselves durable
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _naming(error: OSError, path: Path) -> OSError:
    """The same error (type and errno) naming the file it hit.

    A write that fails on a full disk raises ``OSError(ENOSPC)`` without a file name, so
    the one line the CLI prints ("No space left on device") would not say which file,
    nor on which disk.
    """
    return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))


def _lock_of(temp: Path) -> FileLock:
    return FileLock(f"{temp}{_LOCK_SUFFIX}", timeout=0)


@contextlib.contextmanager
def _locked_temp(path: Path) -> Iterator[tuple[int, Path]]:
    """A new temp file beside ``path`` (an open descriptor and its path), locked while
    the ``with`` block runs; the lock file goes when it ends.

    The temp file is made first and its lock taken second, so a cleaner that took the
    lock in between has already unlinked the temp file: a link count of 0 then says to
    start again under a new name.
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        lock = _lock_of(tmp)
        try:
            lock.acquire(timeout=_WRITER_WAIT_S)
        except Timeout:
            locked = False
        except (OSError, NotImplementedError):  # no locks on this filesystem: then
            yield fd, tmp  # nobody can tell stale temp files, and nobody removes them
            return
        else:
            locked = True
            if os.fstat(fd).st_nlink > 0:
                break
        os.close(fd)  # a cleaner removed it before we locked it: take another name
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _drop(lock, locked)
    try:
        yield fd, tmp
    finally:
        _drop(lock, True)


def _drop(lock: FileLock, locked: bool) -> None:
    """Remove a lock file, then release it: while held, nobody else can be using it."""
    with contextlib.suppress(OSError):
        os.unlink(lock.lock_file)  # on Windows this fails while open; release removes it
    if locked:
        lock.release()


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` whose writer was killed mid-write (SIGKILL, OOM).

    Only files no process holds a lock on are taken, so a concurrent writer of the
    same file (two runs sharing a feature cache) is never disturbed.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    stale = {name.removesuffix(_LOCK_SUFFIX) for name in names}
    for name in sorted(n for n in stale if pattern.fullmatch(n)):
        unlink_unless_locked(path.parent / name)


def unlink_unless_locked(stale: Path) -> None:
    """Delete a temp file and its lock file (either may be named) unless a live writer
    holds the lock (see `_locked_temp`)."""
    temp = Path(str(stale).removesuffix(_LOCK_SUFFIX))
    lock = _lock_of(temp)
    if not (temp.exists() or os.path.exists(lock.lock_file)):
        return
    try:
        lock.acquire()
    except (Timeout, OSError, NotImplementedError):
        return  # a live writer holds it, or this filesystem has no locks: leave it
    try:
        temp.unlink()
    except FileNotFoundError:
        pass
    except OSError:  # still there: its lock file must stay to guard it (see _locked_temp)
        lock.release()
        return
    _drop(lock, True)
