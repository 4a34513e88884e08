"""The feature cache: features stored on disk per image, keyed by the *content* of the
weights, the preprocessing, the decoding, the numerics and each image, so a run does a
forward pass only for images no earlier run has seen (a new split, a subset, a folder
with images added), and any change to those inputs computes afresh. Images and layers
are looked up across shards (see `headstart.features.shards`)."""

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

from headstart._internal.atomic import atomic_write
from headstart._internal.validation import invalid
from headstart.backbones.device import select_device
from headstart.backbones.registry import Backbone
from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError
from headstart.features.extract import extract_features, extract_shared
from headstart.features.fastpath import numerics_tag
from headstart.features.layers import stored_layer_name
from headstart.features.shards import (
    ENTRY_FILE,
    Found,
    compact,
    find_rows,
    remove_entry,
    write_shard,
)
from headstart.parallel import broadcast, world

__all__ = [
    "CacheEntry",
    "CacheUse",
    "FeatureCache",
    "cached_features",
    "default_cache_dir",
    "missing_images",
    "weights_digest",
]

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


def weights_digest(model: nn.Module, features_only: bool = False) -> str:
    """sha256 of a model's state dict contents: names, shapes, dtypes and bytes.

    ``features_only``: leave out the classifier when it is one plain layer (timm's
    ``get_classifier()``): features never pass through it ("final" is its input), so
    a model with its ImageNet head and the same model after ``reset_classifier(0)``
    share cached features.
    """
    skip = _classifier_prefix(model) if features_only else None
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if skip is not None and name.startswith(skip):
            continue
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _classifier_prefix(model: nn.Module) -> str | None:
    """The classifier's state-dict prefix, or None unless it is a single Linear or Conv2d
    (anything larger might hold layers that the pre-logits features do go through)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear | nn.Conv2d):
        return None
    return next((f"{name}." for name, m in model.named_modules() if m is head and name), None)


def model_key(
    backbone: Backbone, fast: bool, device: torch.device | None = None, options: Any = None
) -> str:
    """What features depend on besides the images: weights, preprocessing, decoding, numerics."""
    device = device or torch.device("cpu")
    parts = {
        "backbone": backbone.name,
        "weights": weights_digest(backbone.model, features_only=True),
        "preprocessing": backbone.preprocessing.to_dict(),
        "decode": repr(options),
        "numerics": numerics_tag(device, fast),
        "format": 2,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


_KEY = re.compile(r"[0-9a-f]{32}")  # model and shard keys: 32 hex digits of a sha256


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
    """One shard of cached features (some images at some layers): ``headstart cache``
    lists these."""

    key: str  # "<model key>/<shard key>"
    path: Path
    size: int  # bytes on disk
    images: int | None  # rows, from rows.txt (None for an entry without one)
    layers: tuple[str, ...]
    last_used: float  # POSIX time of the last write or cache hit


@dataclass(frozen=True)
class CacheUse:
    """How a dataset's features were had: rows served from the cache, images extracted.

    True when nothing was extracted, so code that took the old ``was_cached`` flag
    reads it unchanged.
    """

    from_cache: int
    extracted: int

    def __bool__(self) -> bool:
        return self.extracted == 0


@dataclass
class FeatureCache:
    """Features on disk, per image: ``root/<model key>/<shard key>/<layer>.npy`` plus
    ``rows.txt`` (the content hash of each row's image), all written atomically.

    A dataset is served from whichever shards of its model hold its images; only the
    images none holds go through the backbone, and are stored as a new shard. Past
    ``max_shards`` shards under a model, those with the same layers are merged.
    """

    root: Path
    max_entries_scanned: int = 64  # per model key, newest first, when looking for rows
    max_shards: int = 16  # per model key, before shards with the same layers are merged

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    def find(
        self,
        model: str,
        images: Sequence[str],
        layers: Sequence[str],
        bad: Callable[[Path, Exception], None] | None = None,
    ) -> Found:
        """Where the cached rows of ``images`` (distinct content hashes) at ``layers`` are;
        ``found.has(image)`` says which are. Shards that serve rows count as used."""
        found = find_rows(
            self.root / model, images, layers, self.max_entries_scanned, bad or _ignore
        )
        for path in found.used:
            self.touch(f"{model}/{path.name}")
        return found

    def entries(self) -> list[CacheEntry]:
        """Every entry under ``root``, most recently used first. Only folders laid out
        as this cache writes them count: anything else there is not ours."""
        found = []
        for model in _key_folders(self.root):
            # An entry of the first layout (root/<key>/<layer>.npy) is the model folder.
            try:
                legacy = any(ENTRY_FILE.fullmatch(p.name) for p in model.iterdir())
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
            freed += remove_entry(entry.path)
            if entry.path.parent != self.root:  # the model's folder, if that emptied it
                with contextlib.suppress(OSError):
                    entry.path.parent.rmdir()
            removed += 1
        return removed, freed

    def touch(self, key: str) -> None:
        """Mark an entry as used now (what ``clear(older_than_days=...)`` goes by)."""
        with contextlib.suppress(OSError):
            os.utime(self.root / key)

    def save(self, model: str, features: dict[str, np.ndarray], hashes: Sequence[str]) -> str:
        """Store rows (row i is image ``hashes[i]``) as a new shard of ``model``: its key."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / TAG_FILE).is_file():  # marks the folder as ours (see `clear`)
            atomic_write(self.root / TAG_FILE, lambda handle: handle.write(_TAG))
        return f"{model}/{write_shard(self.root / model, features, hashes).name}"

    def compact(self, model: str) -> int:
        """Past ``max_shards`` shards under ``model``, merge those holding the same layers
        (every row kept, even if interrupted): how many shards were merged."""
        return compact(self.root / model, self.max_shards)


def _ignore(path: Path, error: Exception) -> None:
    return None


def cached_features(
    backbone: Backbone,
    dataset: ImageDataset,
    cache: FeatureCache | None,
    *,
    layers: Sequence[str] = ("final",),
    fast: bool = True,
    notice: Callable[[str], None] | None = None,
    **kwargs,
) -> tuple[dict[str, np.ndarray], CacheUse]:
    """Features, from the cache for every image it holds, extracted (and stored) for the
    rest: (features, how many of each).

    Cache trouble never costs a result: a cache that cannot be written (full disk, no
    permission) or a shard that cannot be read is reported through ``notice`` (default:
    a RuntimeWarning), and the features are computed and returned all the same.

    Inside a process group (torchrun), rank 0 alone reads and writes the cache; the
    images it lacks are split between the ranks, each extracts its share, and every rank
    returns the same features (so the cache folder need not be shared between machines).
    """

    def extract(rows: Sequence[int]) -> dict[str, np.ndarray] | None:
        options, tell, size = dict(kwargs), kwargs.get("progress"), world().size
        if tell is not None and size > 1:  # rank 0's share scaled to all: an estimate,
            total = len(rows)  # exact at the end (the other ranks go at its pace)
            options["progress"] = lambda done, _: tell(min(done * size, total), total)
        return extract_shared(
            lambda subset: extract_features(backbone, subset, layers=layers, fast=fast, **options),
            dataset,
            rows,
        )

    if cache is None or not len(dataset):
        features = extract(range(len(dataset))) if len(dataset) else None
        if features is None:  # no images: extract_features makes the empty arrays
            features = extract_features(backbone, dataset, layers=layers, fast=fast, **kwargs)
        return features, CacheUse(0, len(dataset))
    lookup = (
        _Lookup(backbone, dataset, cache, layers, fast, notice, kwargs) if world().is_main else None
    )
    rows = broadcast(lookup.missing_rows() if lookup is not None else None)
    new = extract(rows)
    return broadcast(lookup.finish(new) if lookup is not None else None)


def missing_images(
    backbone: Backbone,
    dataset: ImageDataset,
    cache: FeatureCache,
    *,
    layers: Sequence[str] = ("final",),
    fast: bool = True,
    device: Any = "auto",
) -> int:
    """How many distinct images of ``dataset`` need a forward pass in `cached_features`
    (the same key and lookup, nothing extracted): 0 means every one is in ``cache``, so an
    estimate of the extraction need not time the backbone at all."""
    if not len(dataset):
        return 0
    return len(
        _Lookup(backbone, dataset, cache, layers, fast, _ignore_notice, {"device": device}).missing
    )


def _ignore_notice(text: str) -> None:
    """A shard that cannot be read counts as missing; `cached_features` will say so."""


class _Lookup:
    """Rank 0's side of `cached_features`: what the cache holds, and storing what it lacked."""

    def __init__(
        self,
        backbone: Backbone,
        dataset: ImageDataset,
        cache: FeatureCache,
        layers: Sequence[str],
        fast: bool,
        notice: Callable[[str], None] | None,
        kwargs: dict[str, Any],
    ) -> None:
        self.backbone, self.dataset, self.cache = backbone, dataset, cache
        self.layers, self.fast, self.kwargs = layers, fast, kwargs
        self.tell = notice or _warn
        device = kwargs.get("device", "auto")
        device = select_device(device) if isinstance(device, str) else device
        self.model = model_key(backbone, fast, device, dataset.options)
        # Stored under one name per stage ("stage-1" of a 5-stage model is "stage4"), so
        # the two spellings share an entry.
        self.names = {layer: stored_layer_name(layer, backbone.model) for layer in layers}
        stored = list(dict.fromkeys(self.names.values()))
        self.hashes = dataset.content_hashes()
        self.first = {h: i for i, h in reversed(list(enumerate(self.hashes)))}  # image -> row
        self.found = cache.find(self.model, list(self.first), stored, self.bad)
        # An image missing at any layer is extracted at all of them: the forward pass is
        # the cost, and the new shard then serves the whole request next time.
        self.missing = [h for h in self.first if not self.found.has(h)]

    def bad(self, path: Path, error: Exception) -> None:
        self.tell(
            f"cached features at {path} cannot be read ({error}); computing those images again"
        )

    def missing_rows(self) -> list[int]:
        return [self.first[h] for h in self.missing]

    def finish(self, new: dict[str, np.ndarray] | None) -> tuple[dict[str, np.ndarray], CacheUse]:
        cache, model, layers, names = self.cache, self.model, self.layers, self.names
        if new is not None:
            new = {names[layer]: new[layer] for layer in layers}
            self.found.add(None, new, {h: i for i, h in enumerate(self.missing)})
            try:
                cache.save(model, new, self.missing)
            except OSError as error:  # a full disk must not cost the features just computed
                self.tell(
                    f"could not store features in the cache at {cache.root} ({error}); "
                    "going on without caching them"
                )
            else:
                try:
                    cache.compact(model)
                except OSError as error:  # the shards stay as they were: nothing is lost
                    self.tell(
                        f"could not merge the cache's shards at {cache.root / model} ({error})"
                    )
        try:
            assembled = self.found.assemble(self.hashes)
        except (OSError, ValueError) as error:  # a shard cut short under its memory map
            self.bad(cache.root / model, error)
            features = extract_features(
                self.backbone, self.dataset, layers=layers, fast=self.fast, **self.kwargs
            )
            return features, CacheUse(0, len(self.dataset))
        extracted = set(self.missing)
        served = sum(1 for h in self.hashes if h not in extracted)
        features = {layer: assembled[names[layer]] for layer in layers}
        return features, CacheUse(served, len(self.missing))


def _warn(text: str) -> None:
    warnings.warn(text, RuntimeWarning, stacklevel=3)
