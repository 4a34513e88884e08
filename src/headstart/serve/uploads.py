"""Unpacking a training zip a browser sent, within limits: its size, its member count,
its unpacked size and each member's compression ratio (zip bombs), and never outside
the folder it is unpacked into (absolute names, ``..``, links are refused)."""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from headstart.errors import DataError
from headstart.serve.limits import ServeLimits

__all__ = ["remove_tree", "unpack_zip"]

_CHUNK = 1024 * 1024
_SMALL = 64 * 1024  # members below this unpacked size are never ratio-checked


def unpack_zip(archive: BinaryIO, folder: Path, limits: ServeLimits) -> Path:
    """Unpack ``archive`` into ``folder`` (created); returns the folder holding the
    class folders (the zip's single top folder, when it has one). Raises DataError
    saying which limit or which member is at fault."""
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"The upload is not a readable zip file ({error}).") from None
    with bundle:
        members = [m for m in bundle.infolist() if not m.is_dir()]
        if len(members) > limits.max_zip_members:
            raise DataError(
                f"The zip holds {len(members):,} files; at most {limits.max_zip_members:,} "
                "are accepted."
            )
        declared = sum(m.file_size for m in members)
        if declared > limits.max_zip_unpacked_bytes:
            raise DataError(_too_big(declared, limits))
        folder.mkdir(parents=True, exist_ok=True)
        unpacked = 0
        for member in members:
            relative = _safe_name(member)
            if relative is None:
                continue  # hidden files and macOS resource forks: not data
            ratio = member.file_size / max(member.compress_size, 1)
            if member.file_size > _SMALL and ratio > limits.max_zip_ratio:
                raise DataError(
                    f"{member.filename}: compressed {ratio:,.0f} to 1, above the limit of "
                    f"{limits.max_zip_ratio} to 1; refused as a possible zip bomb."
                )
            target = folder.joinpath(*relative.parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)  # a file of that name: refused
                with bundle.open(member) as source, target.open("xb") as sink:
                    # Counted as read, not as declared: a header can lie about sizes.
                    while chunk := source.read(_CHUNK):
                        unpacked += len(chunk)
                        if unpacked > limits.max_zip_unpacked_bytes:
                            raise DataError(_too_big(unpacked, limits))
                        sink.write(chunk)
            except FileExistsError:
                raise DataError(f"{member.filename}: the zip holds this file twice.") from None
            except (FileNotFoundError, NotADirectoryError):
                raise DataError(f"{member.filename}: a file and a folder share its path.") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
                raise DataError(f"{member.filename}: cannot unpack ({e}).") from None
            except OSError as e:  # the server's own path stays out of the message
                raise DataError(f"{member.filename}: cannot unpack ({e.strerror}).") from None
    return _class_root(folder)


def _safe_name(member: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's path inside the folder, or None to skip it; DataError for names
    that would land outside (absolute, drive letters, ``..``) and for links."""
    mode = member.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DataError(f"{member.filename}: links are not accepted in an uploaded zip.")
    name = member.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if not path.parts:
        return None
    if path.is_absolute() or ":" in path.parts[0]:
        raise DataError(f"{member.filename}: an absolute path is not accepted in a zip.")
    if any(part == ".." for part in path.parts):
        raise DataError(f"{member.filename}: '..' is not accepted in a zip's file names.")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return PurePosixPath(*parts)


def _too_big(size: int, limits: ServeLimits) -> str:
    return (
        f"The zip unpacks to more than {limits.max_zip_unpacked_bytes:,} bytes "
        f"({size:,} so far); refused as a possible zip bomb."
    )


def _class_root(folder: Path) -> Path:
    """A zip of ``photos/cat/...`` and one of ``cat/...`` both give the class folders."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        inner = [p for p in entries[0].iterdir() if not p.name.startswith(".")]
        if inner and all(p.is_dir() for p in inner):
            return entries[0]
    return folder


def remove_tree(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
