"""Reading a file the user pointed at, bounded: only a regular file, and only up to a cap.

A path can name a FIFO (``open`` waits forever for a writer), a character device such
as ``/dev/zero`` (``read`` never ends) or a regular file far larger than its kind ever
is (a 1 GB ``headstart.json``). Every reader in headstart opens through here, so each
of these is refused before a byte is read, with a reason that names the cap.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

__all__ = [
    "DESCRIPTION_MAX_BYTES",
    "MB",
    "FileRefused",
    "describe_bytes",
    "read_capped",
    "regular_file_problem",
]

MB = 1 << 20

#: The largest headstart.json read: a description with 100,000 long class names is ~5 MB.
DESCRIPTION_MAX_BYTES = 16 * MB

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class FileRefused(Exception):
    """``path`` was not read: ``reason`` says why (not a regular file, over the cap).

    Plain, not a HeadstartError: each caller words it as its own error (an image's
    skip reason, a CSV's DataError) with the file it was reading."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def describe_bytes(size: int) -> str:
    """``size`` bytes in MB for a reason (``"64 MB"``), exact bytes below 1 MB."""
    return f"{size / MB:,.0f} MB" if size >= MB else f"{size:,} bytes"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def regular_file_problem(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    return f"not a regular file ({_kind(mode)})"


def read_capped(path: str | os.PathLike[str], cap: int, *, over: str) -> bytes:
    """The whole of ``path``, if it is a regular file (links followed) of at most ``cap``
    bytes; else FileRefused. ``over`` ends the reason for a file above the cap, naming
    the cap's kind and how to raise it ("the 16 MB cap for a model description").

    The file is opened non-blocking, so a FIFO with no writer opens at once and is refused
    by ``fstat``, and the read stops one byte past the cap, so a file that grows between
    ``fstat`` and ``read`` is refused too rather than read without end. OSError (not found,
    no permission) propagates for the caller to word."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        problem = regular_file_problem(info.st_mode)
        if problem is not None:
            raise FileRefused(path, problem)
        if info.st_size > cap:
            raise FileRefused(path, _over_cap(info.st_size, over))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = _read_up_to(handle, info.st_size, cap)
    finally:
        os.close(fd)
    if len(data) > cap:
        raise FileRefused(path, _over_cap(len(data), over, at_least=True))
    return data


def _read_up_to(handle: BinaryIO, size: int, cap: int) -> bytes:
    """The file's bytes, stopping once past ``cap``: ``read(n)`` allocates ``n`` bytes at
    once, so it asks for the size ``fstat`` gave (plus one, to see growth), never the cap."""
    chunks = [handle.read(min(size, cap) + 1)]
    total = len(chunks[0])
    while total > size and total <= cap:  # it grew since fstat: read on, bounded
        chunk = handle.read(min(MB, cap + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _over_cap(size: int, over: str, *, at_least: bool = False) -> str:
    return f"file is {'over ' if at_least else ''}{size:,} bytes, larger than {over}"


def read_head(path: str | os.PathLike[str], size: int) -> bytes:
    """The first ``size`` bytes of a regular file; b"" for anything else or any OSError.

    For sniffing a file's kind while scanning a folder (a DICOM file named without an
    extension): opened non-blocking, so a FIFO is never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, size)
    except OSError:
        return b""
    finally:
        os.close(fd)
