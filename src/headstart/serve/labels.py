"""The labels a person gives on the labelling page, kept in the project folder.

The project folder (``--data``) is what training reads, so a label is written there at
once, in the form chosen when the server started (``labels_as``):

- ``"folders"``: the pool image is copied into ``PROJECT/<class>/`` (the pool is never
  changed), so the project stays a folder of class folders;
- ``"csv"``: a row of ``PROJECT/labels.csv`` (``path,label``, paths relative to the
  project folder, pointing into the pool).

Beside them, ``PROJECT/.headstart-labels.json`` remembers the classes (one with no
image yet has no folder: a folder of no images is refused by the loader), which pool
image went where, and the label-saving curve. Every file is written atomically
(`_internal.atomic`), every change is one read-change-write under a lock (threads of
this server, and other processes through a lock file), so two tabs labelling at once
lose nothing and a restart finds every label. Images a person put in the project
folder are theirs: never overwritten, moved or deleted (a class folder holding them is
not renamed from here).

A client names a pool image by its path inside the pool, which is only ever looked up
in the server's own listing of the pool: a name with ``..``, an absolute path, or a
link leading out of the pool is refused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from filelock import FileLock

from headstart._internal.atomic import atomic_write, atomic_write_files
from headstart.data.loaders import scan_images
from headstart.errors import ConfigError, DataError

__all__ = [
    "CSV_FILE",
    "LABELS_AS",
    "MAX_CLASS_NAME",
    "STATE_FILE",
    "LabelConflict",
    "LabelStore",
    "check_class_name",
]

LABELS_AS = ("folders", "csv")
STATE_FILE = ".headstart-labels.json"
CSV_FILE = "labels.csv"
MAX_CLASS_NAME = 64  # characters: a folder name on every filesystem, a label on a button
_MAX_PATH = 1000  # characters of a pool path a client may send
_RESERVED = frozenset({"__MACOSX", "con", "prn", "aux", "nul"})  # loader skips, Windows names
_FORBIDDEN = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')


class LabelConflict(DataError):
    """A change that contradicts what is there: a class that exists already, or none of
    that name, a folder holding someone's own images."""


def check_class_name(name: Any) -> str:
    """``name`` as a class (and folder) name, or ConfigError saying what is accepted:
    1 to 64 characters, no path separator or ``:*?"<>|``, no control character, not
    starting with a dot or a space, not ending with a space or a dot."""
    if not isinstance(name, str):
        raise ConfigError(f"A class name must be text. Got {type(name).__name__} instead.")
    shown = name[:MAX_CLASS_NAME]
    if not name or len(name) > MAX_CLASS_NAME:
        raise ConfigError(f"A class name must be 1 to {MAX_CLASS_NAME} characters long.")
    if _FORBIDDEN.search(name):
        raise ConfigError(
            f"Class name {shown!r}: no path separators, control characters or "
            ':*?"<>| are accepted (it becomes a folder name).'
        )
    if name.startswith((".", " ")) or name.endswith((" ", ".")):
        raise ConfigError(
            f"Class name {shown!r} must not start with a dot or a space, nor end with "
            "either (hidden or ambiguous folder names)."
        )
    if name.lower() in _RESERVED or name != unicodedata.normalize("NFC", name):
        raise ConfigError(f"Class name {shown!r} cannot be used as a folder name.")
    return name


@dataclass(frozen=True)
class Labelled:
    """One labelled image as it is exported: class, where it is, its name in the class."""

    label: str
    path: Path
    name: str


class LabelStore:
    """The classes and labels of one project folder, for one pool of unlabelled images."""

    def __init__(self, project: Path, pool: Path, labels_as: str = "folders") -> None:
        if labels_as not in LABELS_AS:
            raise ConfigError(
                f"labels_as must be one of {', '.join(LABELS_AS)}. Got {labels_as!r} instead."
            )
        if not Path(pool).is_dir():
            raise ConfigError(f"{pool}: the pool of unlabelled images is not a folder.")
        self.project = Path(project).resolve()
        self.pool = Path(pool).resolve()
        self.labels_as = labels_as
        self.project.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file_lock = FileLock(str(self.project / (STATE_FILE + ".lock")))
        self._listing: dict[str, Path] = {}
        with self._changing() as state:
            kept = state.get("labels_as", labels_as)
            if kept != labels_as:
                raise ConfigError(
                    f"{self.project}: its labels are kept as {kept}; start with that "
                    f"(labels_as={kept!r}) or use another project folder."
                )
            csv_file = self.project / CSV_FILE
            if labels_as == "csv" and csv_file.exists() and "labels" not in state:
                raise ConfigError(
                    f"{csv_file}: a labels file that the labelling page did not write; "
                    "it is yours, so it is left alone: use another project folder."
                )
            state.setdefault("labels_as", labels_as)

    # ----------------------------------------------------------------- reading

    @property
    def data(self) -> Path:
        """What training reads: the project folder, or its labels CSV."""
        return self.project / CSV_FILE if self.labels_as == "csv" else self.project

    def summary(self) -> dict[str, Any]:
        """Classes (name, count, key 1-9) in order, totals, and the label-saving curve."""
        state = self._read()
        counts = self._counts(state)
        labelled_pool = set(state.get("labels", {}))
        unlabelled = sum(1 for rel in self.listing() if rel not in labelled_pool)
        return {
            "labels_as": self.labels_as,
            "classes": [
                {"name": name, "count": count, "key": index + 1 if index < 9 else None}
                for index, (name, count) in enumerate(counts.items())
            ],
            "labelled": sum(counts.values()),
            "unlabelled": unlabelled,
            "curve": state.get("curve", []),
        }

    def classes(self) -> list[str]:
        return list(self._counts(self._read()))

    def listing(self, refresh: bool = True) -> dict[str, Path]:
        """Pool images by their path inside the pool; links leading out are left out."""
        if refresh or not self._listing:
            images, _ = scan_images(self.pool)
            found: dict[str, Path] = {}
            for image in images:
                real = Path(os.path.realpath(image))
                if real.is_relative_to(self.pool) and real.is_file():
                    found[Path(image).relative_to(self.pool).as_posix()] = real
            self._listing = found
        return self._listing

    def unlabelled(self, offset: int = 0, limit: int = 60) -> tuple[int, list[str]]:
        """(how many, a page of them): pool images with no label yet, in path order."""
        labelled = set(self._read().get("labels", {}))
        rest = [rel for rel in self.listing() if rel not in labelled]
        return len(rest), rest[offset : offset + limit]

    def pool_file(self, rel: Any) -> Path:
        """The pool image a client names by ``rel`` (its path inside the pool), or
        DataError: only names of the server's own listing are accepted."""
        if not isinstance(rel, str) or not rel or len(rel) > _MAX_PATH:
            raise DataError("A pool image is named by its path inside the pool.")
        path = PurePosixPath(rel)
        if "\\" in rel or path.is_absolute() or ".." in path.parts or rel != path.as_posix():
            raise DataError(f"{rel[:200]!r}: not a path inside the pool.")
        found = self.listing(refresh=False).get(rel) or self.listing().get(rel)
        if found is None:
            raise DataError(f"{rel[:200]!r}: no such image in the pool.")
        return found

    def pool_name(self, path: str | os.PathLike[str]) -> str | None:
        """The pool path of a file the library names (a suggestion), None if outside."""
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self.pool):
            return None
        rel = real.relative_to(self.pool).as_posix()
        return rel if rel in self.listing(refresh=False) else None

    def labelled(self) -> list[Labelled]:
        """Every labelled image: the project's class folders (folders) or the CSV's rows."""
        state = self._read()
        if self.labels_as == "csv":
            return [
                Labelled(entry["class"], self.pool / rel, entry["file"])
                for rel, entry in sorted(state.get("labels", {}).items())
            ]
        found = []
        for name in self._counts(state):
            folder = self.project / name
            if folder.is_dir():
                for image in scan_images(folder)[0]:
                    found.append(Labelled(name, Path(image), Path(image).name))
        return found

    # ----------------------------------------------------------------- changes

    def add_class(self, name: Any) -> None:
        name = check_class_name(name)
        with self._changing() as state:
            existing = list(self._counts(state))
            clash = [c for c in existing if c.casefold() == name.casefold()]
            if clash:
                raise LabelConflict(f"A class {clash[0]!r} exists already.")
            state.setdefault("classes", []).append(name)

    def rename_class(self, old: Any, new: Any) -> None:
        new = check_class_name(new)
        with self._changing() as state:
            existing = list(self._counts(state))
            if old not in existing:
                raise LabelConflict(f"No class {str(old)[:MAX_CLASS_NAME]!r} to rename.")
            if any(c.casefold() == new.casefold() and c != old for c in existing):
                raise LabelConflict(f"A class {new!r} exists already.")
            ours = {e["file"] for e in state.get("labels", {}).values() if e["class"] == old}
            folder = self.project / old
            if self.labels_as == "folders" and folder.exists():
                theirs = [p.name for p in folder.iterdir() if p.name not in ours]
                if theirs:
                    raise LabelConflict(
                        f"The folder of class {old!r} holds files the labelling page did not "
                        f"put there ({theirs[0]!r}, ...); rename that folder yourself."
                    )
                os.rename(folder, self.project / new)
            classes = state.setdefault("classes", [])
            if old in classes:
                classes[classes.index(old)] = new
            else:
                classes.append(new)
            for entry in state.get("labels", {}).values():
                if entry["class"] == old:
                    entry["class"] = new

    def label(self, rel: Any, name: Any) -> dict[str, Any]:
        """Give the pool image ``rel`` the class ``name`` (which must exist)."""
        source = self.pool_file(rel)
        with self._changing() as state:
            if name not in self._counts(state):
                raise LabelConflict(f"No class {str(name)[:MAX_CLASS_NAME]!r}; create it first.")
            labels = state.setdefault("labels", {})
            before = labels.get(rel)
            if before is not None and before["class"] == name:
                return {"path": rel, "class": name}
            if self.labels_as == "folders":
                file = self._free_name(self.project / name, source.name, state)
                data = source.read_bytes()
                atomic_write(self.project / name / file, lambda handle: handle.write(data))
            else:
                file = self._free_name(None, source.name, state, label=name)
            labels[rel] = {"class": name, "file": file}
        if before is not None and self.labels_as == "folders":  # our own copy, moved
            (self.project / before["class"] / before["file"]).unlink(missing_ok=True)
        return {"path": rel, "class": name}

    def add_point(self, labels: int, accuracy: float, job: str) -> None:
        """One point of the label-saving curve: test accuracy after training on ``labels``."""
        with self._changing() as state:
            point = {"labels": labels, "accuracy": accuracy, "job": job}
            state.setdefault("curve", []).append(point)

    # ----------------------------------------------------------------- on disk

    def _counts(self, state: dict[str, Any]) -> dict[str, int]:
        """Every class, in order (created here first, then folders found), with its count."""
        names = list(state.get("classes", []))
        counts = dict.fromkeys(names, 0)
        if self.labels_as == "folders":
            for entry in sorted(self.project.iterdir(), key=lambda p: p.name):
                if entry.is_dir() and not entry.name.startswith(".") and entry.name != "__MACOSX":
                    counts[entry.name] = len(scan_images(entry)[0])
        else:
            for entry in state.get("labels", {}).values():
                counts[entry["class"]] = counts.get(entry["class"], 0) + 1
        return counts

    def _free_name(
        self, folder: Path | None, wanted: str, state: dict[str, Any], label: str = ""
    ) -> str:
        """A file name in the class not yet taken (on disk, or by another label)."""
        label = label or (folder.name if folder else "")
        taken = {e["file"] for e in state.get("labels", {}).values() if e["class"] == label}
        stem, suffix = os.path.splitext(wanted)
        name, number = wanted, 1
        while name in taken or (folder is not None and (folder / name).exists()):
            number += 1
            name = f"{stem}-{number}{suffix}"
        return name

    def _read(self) -> dict[str, Any]:
        path = self.project / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise DataError(f"{path}: cannot read the labelling state ({error}).") from None
        if not isinstance(state, dict):
            raise DataError(f"{path}: the labelling state is not a JSON object.")
        return state

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """The state to change, read fresh under both locks; written back (with the
        CSV, in one atomic step) when the block ends without an error."""
        with self._lock, self._file_lock:
            state = self._read()
            yield state
            text = json.dumps(state, indent=1, ensure_ascii=False).encode()
            files = [(self.project / STATE_FILE, lambda handle: handle.write(text))]
            if self.labels_as == "csv" and state.get("labels"):
                table = self._csv_text(state).encode()
                files.insert(0, (self.project / CSV_FILE, lambda handle: handle.write(table)))
            atomic_write_files(files)

    def _csv_text(self, state: dict[str, Any]) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label"])
        for rel, entry in sorted(state["labels"].items()):
            writer.writerow([os.path.relpath(self.pool / rel, self.project), entry["class"]])
        return buffer.getvalue()
