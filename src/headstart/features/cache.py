"""The feature cache: features stored on disk, keyed by the *content* of the weights, the
preprocessing, the decoding, the numerics and the images, so a second run does no
forward pass and any change to those inputs computes afresh. One entry holds any
number of layers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart._internal.atomic import TEMP_FILE, atomic_write, unlink_unless_locked
from headstart._internal.validation import invalid
from headstart.backbones.device import select_device
from headstart.backbones.registry import Backbone
from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError
from headstart.features.extract import extract_features
from headstart.features.fastpath import numerics_tag
from headstart.features.layers import stored_layer_name

__all__ = ["CacheEntry", "FeatureCache", "cached_features", "default_cache_dir", "weights_digest"]

CACHE_ENV = "HEADSTART_CACHE"


def default_cache_dir() -> Path:
    """The feature cache folder when none is named: ``$HEADSTART_CACHE`` when set (the
    same folder ``--cache-dir`` names), else ``$XDG_CACHE_HOME/headstart/features``
    (``~/.cache/headstart/features``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "headstart" / "features"


def weights_digest(model: nn.Module) -> str:
    """sha256 of a model's state dict contents: names, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_key(
    backbone: Backbone, fast: bool, device: torch.device | None = None, options: Any = None
) -> str:
    """What features depend on besides the images: weights, preprocessing, decoding, numerics."""
    device = device or torch.device("cpu")
    parts = {
        "backbone": backbone.name,
        "weights": weights_digest(backbone.model),
        "preprocessing": backbone.preprocessing.to_dict(),
        "decode": repr(options),
        "numerics": numerics_tag(device, fast),
        "format": 2,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def rows_key(dataset: ImageDataset) -> str:
    """The images, in order (labels play no part: features do not depend on them)."""
    return hashlib.sha256("\n".join(dataset.content_hashes()).encode()).hexdigest()[:32]


_KEY = re.compile(r"[0-9a-f]{32}")  # model and rows keys: 32 hex digits of a sha256


_ENTRY_FILE = re.compile(r"[A-Za-z0-9_\-]+\.npy|rows\.txt")


TAG_FILE = "CACHEDIR.TAG"  # https://bford.info/cachedir/: backup tools skip the folder


_TAG = b"Signature: 8a477f597d28d172789f06886806bc55\n# headstart feature cache\n"


def _key_folders(folder: Path) -> list[Path]:
    try:
        return [
            p
            for p in folder.iterdir()
            if _KEY.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
        ]
    except OSError:
        return []


@dataclass(frozen=True)
class CacheEntry:
    """One cached set of features: ``headstart cache`` lists these."""

    key: str  # "<model key>/<rows key>"
    path: Path
    size: int  # bytes on disk
    images: int | None  # rows, from rows.txt (None for an entry without one)
    layers: tuple[str, ...]
    last_used: float  # POSIX time of the last write or cache hit


@dataclass
class FeatureCache:
    """Features on disk: ``root/<model key>/<rows key>/<layer>.npy`` plus ``rows.txt``
    (the content hash of each row's image), all written atomically.

    A dataset whose images all sit in an entry already cached for the same model
    (a draw from a training set, the unlabelled rest of it) is served by picking
    rows from that entry, with no forward pass.
    """

    root: Path
    max_entries_scanned: int = 64  # per model key, newest first, when looking for rows

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    def _path(self, key: str, layer: str) -> Path:
        return self.root / key / f"{layer}.npy"

    def load(
        self, key: str, layers: Sequence[str], rows: int, mmap: bool = False
    ) -> dict[str, np.ndarray] | None:
        """The cached layers, or None when any is missing or unreadable."""
        found = {}
        for layer in layers:
            path = self._path(key, layer)
            try:
                array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
            except (OSError, ValueError, EOFError):
                return None
            if array.ndim != 2 or array.shape[0] != rows:
                return None
            found[layer] = array
        return found

    def load_rows(
        self, model: str, hashes: Sequence[str], layers: Sequence[str]
    ) -> dict[str, np.ndarray] | None:
        """Rows for ``hashes`` gathered from the entries of ``model`` (newest first), or
        None unless every one of them is found."""
        folder = self.root / model
        try:
            entries = sorted(
                (e for e in folder.iterdir() if (e / "rows.txt").is_file()),
                key=lambda e: e.stat().st_mtime,
                reverse=True,
            )[: self.max_entries_scanned]
        except OSError:
            return None
        missing = set(hashes)
        sources: list[dict[str, np.ndarray]] = []
        where: dict[str, tuple[int, int]] = {}  # hash -> (source, row in it)
        for entry in entries:
            if not missing:
                break
            try:
                stored = (entry / "rows.txt").read_text().split("\n")
            except (OSError, UnicodeDecodeError):
                continue
            index = {h: i for i, h in enumerate(stored)}
            have = missing.intersection(index)
            if not have:
                continue
            found = self.load(f"{model}/{entry.name}", layers, len(stored), mmap=True)
            if found is None:
                continue
            sources.append(found)
            self.touch(f"{model}/{entry.name}")
            where.update((h, (len(sources) - 1, index[h])) for h in have)
            missing -= have
        if missing:
            return None
        source_of = np.fromiter((where[h][0] for h in hashes), np.int64, len(hashes))
        row_of = np.fromiter((where[h][1] for h in hashes), np.int64, len(hashes))
        out = {}
        try:
            for layer in layers:
                width = sources[0][layer].shape[1]
                if any(source[layer].shape[1] != width for source in sources):
                    return None
                gathered = np.empty((len(hashes), width), dtype=np.float32)
                for number, source in enumerate(sources):
                    mine = np.flatnonzero(source_of == number)
                    gathered[mine] = source[layer][row_of[mine]]
                out[layer] = gathered
        except (OSError, ValueError):  # a file cut short under the memory map
            return None
        return out

    def entries(self) -> list[CacheEntry]:
        """Every entry under ``root``, most recently used first. Only folders laid out
        as this cache writes them count: anything else there is not ours."""
        found = []
        for model in _key_folders(self.root):
            # An entry of the first layout (root/<key>/<layer>.npy) is the model folder.
            try:
                legacy = any(_ENTRY_FILE.fullmatch(p.name) for p in model.iterdir())
            except OSError:
                continue
            for entry in _key_folders(model) + ([model] if legacy else []):
                try:  # another run may be writing or clearing it this very moment
                    found.append(self._describe(model, entry))
                except OSError:
                    continue
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    @staticmethod
    def _describe(model: Path, entry: Path) -> CacheEntry:
        files = [f for f in entry.iterdir() if f.is_file() and not f.is_symlink()]
        stats = [f.stat() for f in files]
        try:
            rows: int | None = (entry / "rows.txt").read_text().count("\n") + 1
        except (OSError, UnicodeDecodeError):
            rows = None
        return CacheEntry(
            key=model.name if entry == model else f"{model.name}/{entry.name}",
            path=entry,
            size=sum(st.st_size for st in stats),
            images=rows,
            layers=tuple(sorted(f.stem for f in files if f.suffix == ".npy")),
            last_used=max([entry.stat().st_mtime] + [st.st_mtime for st in stats]),
        )

    def clear(self, older_than_days: float | None = None) -> tuple[int, int]:
        """Delete entries (those unused for ``older_than_days``, or all): (entries, bytes).

        Only the files this cache writes are removed (layer arrays, ``rows.txt``, temp
        files no live writer holds), and then the folders if that left them empty.
        """
        if older_than_days is not None and not older_than_days >= 0:
            raise invalid("FeatureCache.clear", "older_than_days", "a number >= 0", older_than_days)
        entries = self.entries()
        if entries and not (self.root / TAG_FILE).is_file():
            raise ConfigError(
                f"{self.root} has no {TAG_FILE}, so it was not made by this version of "
                "headstart's feature cache (or is not one): nothing was deleted; remove "
                "old cache folders by hand"
            )
        limit = None if older_than_days is None else time.time() - older_than_days * 86400
        removed, freed = 0, 0
        for entry in entries:
            if limit is not None and entry.last_used >= limit:
                continue
            try:
                paths = list(entry.path.iterdir())
            except OSError:
                continue
            for path in paths:
                if _ENTRY_FILE.fullmatch(path.name) and not path.is_symlink():
                    with contextlib.suppress(OSError):
                        size = path.stat().st_size
                        path.unlink()
                        freed += size
                elif TEMP_FILE.fullmatch(path.name):
                    unlink_unless_locked(path)
            with contextlib.suppress(OSError):
                entry.path.rmdir()
                if entry.path.parent != self.root:  # the model's folder, if that emptied it
                    entry.path.parent.rmdir()
            removed += 1
        return removed, freed

    def touch(self, key: str) -> None:
        """Mark an entry as used now (what ``clear(older_than_days=...)`` goes by)."""
        with contextlib.suppress(OSError):
            os.utime(self.root / key)

    def save(self, key: str, features: dict[str, np.ndarray], hashes: Sequence[str] = ()) -> None:
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        if not (self.root / TAG_FILE).is_file():  # marks the folder as ours (see `clear`)
            atomic_write(self.root / TAG_FILE, lambda handle: handle.write(_TAG))
        for layer, array in features.items():
            atomic_write(self._path(key, layer), lambda handle, a=array: np.save(handle, a))
        if hashes:  # last: an entry is offered for row picking only once its arrays exist
            text = "\n".join(hashes).encode()
            atomic_write(folder / "rows.txt", lambda handle: handle.write(text))


def cached_features(
    backbone: Backbone,
    dataset: ImageDataset,
    cache: FeatureCache | None,
    *,
    layers: Sequence[str] = ("final",),
    fast: bool = True,
    notice: Callable[[str], None] | None = None,
    **kwargs,
) -> tuple[dict[str, np.ndarray], bool]:
    """Features from the cache when there, else extracted and stored: (features, was_cached).

    A cache that cannot be written (full disk, no permission) is reported through
    ``notice`` (default: a RuntimeWarning), and the features are returned all the same.
    """
    if cache is None:
        return extract_features(backbone, dataset, layers=layers, fast=fast, **kwargs), False
    device = kwargs.get("device", "auto")
    device = select_device(device) if isinstance(device, str) else device
    model = model_key(backbone, fast, device, dataset.options)
    key = f"{model}/{rows_key(dataset)}"
    # Stored under one name per stage ("stage-1" of a 5-stage model is "stage4"), so
    # the two spellings share an entry.
    names = {layer: stored_layer_name(layer, backbone.model) for layer in layers}
    stored = list(dict.fromkeys(names.values()))
    found = cache.load(key, stored, len(dataset))
    if found is not None:
        cache.touch(key)
    elif len(dataset):
        found = cache.load_rows(model, dataset.content_hashes(), stored)
    if found is not None:
        return {layer: found[names[layer]] for layer in layers}, True
    features = extract_features(backbone, dataset, layers=layers, fast=fast, **kwargs)
    try:
        cache.save(
            key, {names[layer]: features[layer] for layer in layers}, dataset.content_hashes()
        )
    except OSError as error:  # a full disk must not cost the features just computed
        text = (
            f"could not store features in the cache at {cache.root} ({error}); "
            "going on without caching them"
        )
        if notice is None:
            warnings.warn(text, RuntimeWarning, stacklevel=2)
        else:
            notice(text)
    return features, False
