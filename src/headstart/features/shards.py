"""Shards: the feature cache's unit on disk, keyed per image.

Under one model key (weights, preprocessing, decoding, numerics) a shard is a folder
``<rows key>/`` of ``<layer>.npy`` arrays whose row i belongs to the image whose content
hash is line i of ``rows.txt``. Any image is looked up in every shard, so a new split,
a subset or a folder with a few images added costs a forward pass only for the images
no shard holds. Every file is written atomically and ``rows.txt`` last, so a shard is
offered only once it is whole; shards are merged past a count, and a merge deletes its
inputs only after the merged shard is whole, so an interrupted merge loses no row.

Each row carries a checksum per layer (``checks.npz``), verified for the rows a run
reads, together with their being finite: a flipped bit on disk or a row of NaN makes
the shard corrupt (reported, its images computed again), never a silently wrong or
non-finite feature. Shards of earlier versions, without checksums, are checked for
finiteness only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headstart._internal.atomic import TEMP_FILE, atomic_write, unlink_unless_locked

__all__ = [
    "CHECKS_FILE",
    "ENTRY_FILE",
    "ROWS_FILE",
    "Found",
    "compact",
    "find_rows",
    "remove_entry",
    "rows_key",
    "shard_folders",
    "write_shard",
]

ROWS_FILE = "rows.txt"

CHECKS_FILE = "checks.npz"  # per layer, one checksum per row

ENTRY_FILE = re.compile(r"[A-Za-z0-9_\-]+\.npy|rows\.txt|checks\.npz")  # an entry's files

BadShard = Callable[[Path, Exception], None]  # told of a shard that cannot be read


def rows_key(hashes: Sequence[str]) -> str:
    """A shard's name: its images, in order (so equal rows make the same shard)."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:32]


def shard_folders(model: Path, limit: int | None = None) -> list[Path]:
    """Whole shards (``rows.txt`` written) under a model folder, most recently used first."""
    try:
        found = [(p.stat().st_mtime, p) for p in model.iterdir() if (p / ROWS_FILE).is_file()]
    except OSError:
        return []
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [path for _, path in found[:limit]]


@dataclass(frozen=True)
class _Shard:
    path: Path
    hashes: list[str]
    layers: frozenset[str]  # the .npy files present when it was read
    mtime: float

    def index(self) -> dict[str, int]:
        """Image -> row (a shard of the previous version may hold an image twice)."""
        return {h: i for i, h in enumerate(self.hashes)}


def _read(path: Path) -> _Shard:
    mtime = path.stat().st_mtime
    hashes = (path / ROWS_FILE).read_text().split("\n")
    layers = frozenset(p.stem for p in path.iterdir() if p.suffix == ".npy")
    return _Shard(path, hashes, layers, mtime)


def row_checksums(array: np.ndarray) -> np.ndarray:
    """One uint64 per row: its bytes weighted by odd numbers, summed modulo 2**64.

    Any single flipped bit changes its row's sum (an odd weight times a power of two
    below 2**8 is never 0 modulo 2**64), and it is vectorised, so checking the rows a
    run reads costs little next to reading them; this is a check against damage on
    disk, not against someone forging rows.
    """
    rows = np.ascontiguousarray(array).reshape(len(array), -1).view(np.uint8)
    weights = np.arange(1, 2 * rows.shape[1], 2, dtype=np.uint64)
    sums = np.empty(len(rows), dtype=np.uint64)
    step = max(1, (1 << 23) // max(1, rows.shape[1]))  # about 64 MB of uint64 at a time
    for start in range(0, len(rows), step):
        block = rows[start : start + step].astype(np.uint64)
        sums[start : start + step] = (block * weights).sum(axis=1, dtype=np.uint64)
    return sums


def _verify(shard: _Shard, arrays: dict[str, np.ndarray], rows: Iterable[int]) -> None:
    """ValueError unless the given rows of each array are finite and match the checksums
    stored with the shard (when it has them: shards of earlier versions do not)."""
    picked = np.fromiter(sorted(set(rows)), np.int64)
    try:
        stored = np.load(shard.path / CHECKS_FILE, allow_pickle=False)
    except FileNotFoundError:
        stored = None
    with contextlib.ExitStack() as stack:
        if stored is not None:
            stack.callback(stored.close)
        for layer, array in arrays.items():
            values = np.asarray(array[picked])
            if not np.isfinite(values).all():
                bad = int((~np.isfinite(values).reshape(len(picked), -1).all(axis=1)).sum())
                raise ValueError(f"{layer}.npy holds {bad} row(s) of NaN or infinity")
            if stored is None:
                continue
            try:
                expected = stored[layer]
            except KeyError:
                raise ValueError(f"{CHECKS_FILE} has no checksums for {layer}.npy") from None
            if expected.shape != (len(shard.hashes),):
                raise ValueError(f"{CHECKS_FILE} does not hold one checksum per row")
            wrong = int((row_checksums(values) != expected[picked]).sum())
            if wrong:
                raise ValueError(f"{layer}.npy: {wrong} row(s) fail their checksum")


def _open(shard: _Shard, layers: Iterable[str], widths: dict[str, int]) -> dict[str, np.ndarray]:
    """The shard's arrays, memory-mapped; ValueError unless each is (rows, width)."""
    arrays = {}
    for layer in layers:
        array = np.load(shard.path / f"{layer}.npy", allow_pickle=False, mmap_mode="r")
        if array.ndim != 2 or array.shape[0] != len(shard.hashes):
            raise ValueError(f"{layer}.npy holds {array.shape}, not {len(shard.hashes)} rows")
        if widths.get(layer, array.shape[1]) != array.shape[1]:
            raise ValueError(f"{layer}.npy is {array.shape[1]} wide, not {widths[layer]}")
        arrays[layer] = array
    return arrays


# bad header, cut short, not text, a bad checksums file (zipfile.BadZipFile is an OSError's
# sibling, not a ValueError)
_CORRUPT = (ValueError, EOFError, UnicodeDecodeError, zipfile.BadZipFile)


@dataclass
class Found:
    """Where each (layer, image) lives: shards memory-mapped, rows picked, none copied yet."""

    sources: list[dict[str, np.ndarray]] = field(default_factory=list)
    used: list[Path] = field(default_factory=list)
    # layer -> image -> (source, row)
    where: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def has(self, image: str) -> bool:
        """Every requested layer of this image is cached."""
        return all(image in rows for rows in self.where.values())

    def add(self, path: Path | None, arrays: dict[str, np.ndarray], rows: dict[str, int]) -> None:
        """Take the images in ``rows`` (image -> row) from ``arrays``, at every layer there."""
        self.sources.append(arrays)
        if path is not None:
            self.used.append(path)
        number = len(self.sources) - 1
        for layer in arrays:
            self.where[layer].update((h, (number, i)) for h, i in rows.items())

    def assemble(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """One float32 array per layer, rows in the order of ``hashes`` (all of them found)."""
        out = {}
        for layer, rows in self.where.items():
            source_of = np.fromiter((rows[h][0] for h in hashes), np.int64, len(hashes))
            row_of = np.fromiter((rows[h][1] for h in hashes), np.int64, len(hashes))
            width = next(s[layer].shape[1] for s in self.sources if layer in s)
            gathered = np.empty((len(hashes), width), dtype=np.float32)
            for number, source in enumerate(self.sources):
                mine = np.flatnonzero(source_of == number)
                if len(mine):
                    gathered[mine] = source[layer][row_of[mine]]
            out[layer] = gathered
        return out


def find_rows(
    model: Path, images: Sequence[str], layers: Sequence[str], limit: int, bad: BadShard
) -> Found:
    """Which shards hold which of ``images`` (distinct hashes) at which ``layers``.

    Newest shards first; a shard is opened only when it adds rows. A shard holding
    some of the layers serves those; the rest count as missing. An unreadable shard
    is reported to ``bad`` and skipped (its rows count as missing). A shard that
    vanishes while being read (another run merged it away) sends the scan round
    again, since the merged shard holds its rows.
    """
    skip: set[Path] = set()
    found = Found()
    for _ in range(3):
        found, vanished = Found(where={layer: {} for layer in layers}), False
        wanted = set(images)
        widths: dict[str, int] = {}
        for path in shard_folders(model, limit):
            if path in skip:
                continue
            try:
                shard = _read(path)
                index = shard.index()
                new = {
                    layer: wanted.intersection(index).difference(found.where[layer])
                    for layer in layers
                    if layer in shard.layers
                }
                new = {layer: rows for layer, rows in new.items() if rows}
                if not new:
                    continue
                arrays = _open(shard, new, widths)
                _verify(shard, arrays, (index[h] for rows in new.values() for h in rows))
            except FileNotFoundError:
                vanished = True
                continue
            except (OSError, *_CORRUPT) as error:
                skip.add(path)
                bad(path, error)
                continue
            found.sources.append(arrays)
            found.used.append(path)
            for layer, rows in new.items():
                widths.setdefault(layer, arrays[layer].shape[1])
                found.where[layer].update((h, (len(found.sources) - 1, index[h])) for h in rows)
        if not vanished:
            break
    return found


def write_shard(model: Path, features: dict[str, np.ndarray], hashes: Sequence[str]) -> Path:
    """Store rows as a shard named by its images; ``rows.txt`` last, so it is whole when seen."""
    folder = model / rows_key(hashes)
    folder.mkdir(parents=True, exist_ok=True)
    # A shard of the same images may already hold other layers (a second run asked for
    # more): their checksums are kept, or the next read of them would fail its check.
    sums = _stored_checksums(folder, len(hashes))
    for layer, array in features.items():
        atomic_write(folder / f"{layer}.npy", lambda handle, a=array: np.save(handle, a))
    sums.update({layer: row_checksums(array) for layer, array in features.items()})
    atomic_write(folder / CHECKS_FILE, lambda handle: np.savez(handle, **sums))
    text = "\n".join(hashes).encode()
    atomic_write(folder / ROWS_FILE, lambda handle: handle.write(text))
    return folder


def _stored_checksums(folder: Path, rows: int) -> dict[str, np.ndarray]:
    """The checksums already in ``folder`` for layers whose file is still there, one per
    row; none when there are none or they cannot be read (those layers then recompute)."""
    try:
        with np.load(folder / CHECKS_FILE, allow_pickle=False) as stored:
            return {
                layer: stored[layer]
                for layer in stored.files
                if stored[layer].shape == (rows,) and (folder / f"{layer}.npy").is_file()
            }
    except (OSError, ValueError):
        return {}


def remove_entry(folder: Path) -> int:
    """Delete the cache's files in ``folder`` (``rows.txt`` first, so no run is offered a
    half-deleted shard), temp files no live writer holds, then the folder if empty:
    bytes freed."""
    freed = 0
    try:
        paths = sorted(folder.iterdir(), key=lambda p: p.name != ROWS_FILE)
    except OSError:
        return 0
    for path in paths:
        if ENTRY_FILE.fullmatch(path.name) and not path.is_symlink():
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                freed += size
        elif TEMP_FILE.fullmatch(path.name):
            unlink_unless_locked(path)
    with contextlib.suppress(OSError):
        folder.rmdir()
    return freed


def compact(model: Path, most: int) -> int:
    """Past ``most`` shards, merge the shards holding the same layers: shards merged.

    The merged shard (rows sorted by image, so two runs merging the same shards make
    the same one) is written whole before any input is deleted: an interruption leaves
    duplicates, never a lost row. Shards found corrupt are deleted (they were never
    going to be read); one that cannot be read for another reason is left alone.
    """
    paths = shard_folders(model)
    if len(paths) <= most:
        return 0
    groups: dict[frozenset[str], list[_Shard]] = {}
    for path in paths:
        with contextlib.suppress(OSError, *_CORRUPT):
            shard = _read(path)
            groups.setdefault(shard.layers, []).append(shard)
    merged = 0
    for layers, shards in groups.items():
        if len(shards) < 2 or not layers:
            continue
        found = Found(where={layer: {} for layer in layers})
        seen = found.where[min(layers)]  # every layer holds the same images here
        inputs: list[_Shard] = []
        widths: dict[str, int] = {}
        for shard in shards:  # newest first: the newest copy of an image wins
            try:
                arrays = _open(shard, layers, widths)
                _verify(shard, arrays, range(len(shard.hashes)))
            except _CORRUPT:
                remove_entry(shard.path)
                continue
            except OSError:
                continue
            widths.update((layer, array.shape[1]) for layer, array in arrays.items())
            found.add(shard.path, arrays, {h: i for h, i in shard.index().items() if h not in seen})
            inputs.append(shard)
        if len(inputs) < 2:
            continue
        hashes = sorted(seen)
        out = write_shard(model, found.assemble(hashes), hashes)
        newest = max(shard.mtime for shard in inputs)  # a merge is no use: keep the last use
        for path in [*out.iterdir(), out]:
            with contextlib.suppress(OSError):
                os.utime(path, (newest, newest))
        for shard in inputs:
            if shard.path != out:
                remove_entry(shard.path)
        merged += len(inputs)
    return merged
