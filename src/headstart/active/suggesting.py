"""``suggest``: which unlabelled images to label next, so that each label helps most.

The pool's features come from the feature cache (a second round extracts nothing), the
current model is a linear probe fitted on the labelled images' cached features (or the
head of a trained model folder), and the batch is chosen by `selection`: uncertainty,
raised for classes with few labels, drawn for diversity. With no labels, or fewer than
two in some class, a cold start picks typical images of distinct groups of the pool.

A pool image that is already labelled (the same bytes: its content hash) is never
suggested, nor is one image twice (duplicates in the pool count once).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart._internal.validation import check_int, invalid
from headstart.active.selection import Pick, cold_start_batch, normalised, uncertain_batch
from headstart.active.suggestions import Suggestion, SuggestionList
from headstart.data.dataset import ImageDataset
from headstart.errors import DataError

__all__ = ["MIN_LABELS_PER_CLASS", "choose", "reason_for", "suggest"]

# Below this many labels in some class the probe is not trusted: cold start.
MIN_LABELS_PER_CLASS = 2
META_FILE = "headstart.json"  # what marks a model folder (estimator.model_files)

Progress = Callable[[str, int, int], None]


@dataclass
class _Source:
    """What the labelled side gives: the images the probe fits on (None: unknown), every
    labelled image's hash, the classes, and the feature settings."""

    labelled: ImageDataset | None
    known: set[str]
    classes: list[str]
    backbone: Any  # headstart.backbones.registry.Backbone
    layers: tuple[str, ...]
    fast: bool = True
    head: Any = None  # a trained model's head over those features; None: fit a probe
    probe_l2: float = 1e-3
    options: Any = None  # DecodeOptions the pool is read with
    notes: list[str] = field(default_factory=list)


def suggest(
    source: str | os.PathLike[str] | ImageDataset | None,
    unlabelled: str | os.PathLike[str] | ImageDataset,
    n: int,
    *,
    seed: int = 0,
    backbone: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    image_size: int | None = None,
    weights: str = "auto",
    device: str = "auto",
    batch_size: int = 64,
) -> SuggestionList:
    """The ``n`` pool images whose labels should help the model most, best first.

    ``source``: a model folder (a trained run: its head gives the probabilities), or
    labelled data (a folder of class folders, a CSV, an ``ImageDataset``: a linear probe
    is fitted on its cached features), or None for a cold start from the pool alone.
    ``unlabelled``: the pool (a folder, searched recursively, a CSV, or an
    ``ImageDataset``, whose labels are not looked at). ``backbone``/``image_size``: the
    features for labelled data (default: the default backbone at its own size; a model
    folder uses its own). ``cache_dir``: the feature cache (default: the default one).
    ``progress(stage, done, total)`` hears feature extraction. Deterministic for a seed.
    """
    check_int("suggest", "n", n)
    check_int("suggest", "seed", seed, low=0)
    if progress is not None and not callable(progress):
        raise invalid("suggest", "progress", "a callable (stage, done, total) or None", progress)
    _check_pool_path(unlabelled)  # before the labelled side is read: the quick check first
    origin = _resolve_source(source, backbone, weights, image_size)
    pool, notes = _distinct_pool(_open_pool(unlabelled, origin.options), origin.known)
    if not len(pool):
        raise DataError(
            f"No image of the pool {_described(unlabelled)} is left to suggest: "
            + ("; ".join(notes) or "it holds no images")
            + "."
        )
    features = _features(origin, pool, cache_dir, progress, device, batch_size)
    picks, mode = choose(origin, features, n, seed)
    counts = _counts(origin)
    items = [
        Suggestion(
            path=pool.source(p.index),
            reason=reason_for(p, origin.classes, counts),
            suggested_label=None if p.label is None else origin.classes[p.label],
            probability=p.probability,
            score=round(p.score, 6),
        )
        for p in picks
    ]
    by_path = {pool.source(i): i for i in range(len(pool))}
    return SuggestionList(
        items,
        mode=mode,
        pool_size=len(pool),
        notes=origin.notes + notes,
        image_of=lambda path: pool.image(by_path[path]),
    )


def choose(
    origin: _Source, features: dict[str, np.ndarray], n: int, seed: int
) -> tuple[list[Pick], str]:
    """(picks, mode) from the labelled and pool features: the uncertainty batch when a
    model can be had, else the cold start."""
    from headstart.train.probe import fit_linear_probe

    pool_x, labelled_x = features["pool"], features.get("labelled")
    labels = origin.labelled.labels if origin.labelled is not None else np.zeros(0, np.int64)
    reference = pool_x if labelled_x is None else np.concatenate([labelled_x, pool_x])
    pool_z = normalised(pool_x, reference)
    labelled_z = normalised(labelled_x, reference) if labelled_x is not None else pool_z[:0]
    if origin.head is None and not _enough_labels(labels, len(origin.classes)):
        return cold_start_batch(pool_z, n, seed, labelled_z, labels), "cold start"
    if origin.head is not None:
        proba = _head_proba(origin.head, pool_x)
    else:
        probe = fit_linear_probe(
            labelled_x, labels, len(origin.classes), l2=origin.probe_l2, seed=seed
        )
        proba = probe.predict_proba(pool_x)
    return uncertain_batch(labelled_z, labels, pool_z, proba, n, seed), "uncertainty"


def _enough_labels(labels: np.ndarray, classes: int) -> bool:
    counts = np.bincount(labels, minlength=classes)
    return classes >= 2 and int(counts.min()) >= MIN_LABELS_PER_CLASS


def reason_for(pick: Pick, classes: Sequence[str], counts: np.ndarray | None) -> str:
    """A pick's reason in words."""
    if pick.kind == "few labels" and pick.label is not None:
        known = "" if counts is None else f" ({int(counts[pick.label])} labelled)"
        return f"few labels in class {classes[pick.label]}{known}"
    if pick.kind == "far":
        return "far from every labelled image"
    if pick.kind == "representative":
        return f"representative of {pick.group_size} similar pool images"
    if pick.label is not None and pick.runner_up is not None and pick.runner_up != pick.label:
        return f"uncertain between {classes[pick.label]} and {classes[pick.runner_up]}"
    return "uncertain"


def _counts(origin: _Source) -> np.ndarray | None:
    if origin.labelled is None:
        return None
    return np.bincount(origin.labelled.labels, minlength=len(origin.classes))


def _head_proba(head: Any, features: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        logits = head(torch.from_numpy(np.ascontiguousarray(features)).float())
        return torch.softmax(logits.float(), dim=1).numpy()


def _features(
    origin: _Source,
    pool: ImageDataset,
    cache_dir: str | os.PathLike[str] | None,
    progress: Progress | None,
    device: str,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """The pool's (and the labelled images') features, through the feature cache."""
    from headstart.features.cache import FeatureCache, cached_features, default_cache_dir

    cache = FeatureCache(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    out = {}
    parts = [("pool", pool)]
    if origin.labelled is not None and origin.head is None:
        parts.insert(0, ("labelled", origin.labelled))
    for name, dataset in parts:
        tell = None if progress is None else (lambda d, t, name=name: progress(name, d, t))
        found, _ = cached_features(
            origin.backbone, dataset, cache, layers=origin.layers, fast=origin.fast,
            device=device, batch_size=batch_size, progress=tell,
        )  # fmt: skip
        out[name] = np.concatenate([found[layer] for layer in origin.layers], axis=1)
    return out


def _resolve_source(
    source: Any, backbone: str | None, weights: str, image_size: int | None
) -> _Source:
    """A model folder, labelled data, or None, as a `_Source`."""
    from headstart.data.decode import DecodeOptions

    if isinstance(source, str | os.PathLike) and (Path(source) / META_FILE).is_file():
        return _model_source(Path(source), backbone)
    if source is None:
        labelled, known = None, set()
    elif isinstance(source, ImageDataset):
        labelled, known = source, set(source.content_hashes())
    elif isinstance(source, str | os.PathLike):
        labelled, known = _labelled_from_path(Path(source))
    else:
        raise invalid(
            "suggest", "source", "a model folder, labelled data (a folder, a CSV or an "
            "ImageDataset) or None", source,
        )  # fmt: skip
    return _data_source(labelled, known, backbone, weights, image_size, DecodeOptions())


def _data_source(
    labelled: ImageDataset | None,
    known: set[str],
    backbone: str | None,
    weights: str,
    image_size: int | None,
    options: Any,
) -> _Source:
    from headstart.backbones.registry import DEFAULT_BACKBONE, create_backbone
    from headstart.strategies.registry import get_strategy

    config = get_strategy("feature-extraction").default_config()
    built = create_backbone(backbone or DEFAULT_BACKBONE, weights, image_size=image_size)
    return _Source(
        labelled=labelled,
        known=known,
        classes=list(labelled.classes) if labelled is not None else [],
        backbone=built,
        layers=tuple(config.layers),
        fast=config.fast,
        probe_l2=config.probe_l2,
        options=labelled.options if labelled is not None else options,
    )


def _model_source(folder: Path, backbone: str | None) -> _Source:
    """A trained model: its body's features, its head's probabilities; the labelled images
    are those of the data it names (when that path still exists), else unknown."""
    from headstart.backbones.registry import Backbone
    from headstart.estimator.image_classifier import ImageClassifier

    clf = ImageClassifier.load(folder)
    if type(clf) is not ImageClassifier:
        raise invalid(
            "suggest", "source", "a single model's folder (an ensemble has no one head)", folder
        )
    if backbone is not None and backbone != clf.backbone:
        raise invalid(
            "suggest", "backbone", f"None or {clf.backbone!r} (the model's own)", backbone
        )
    body = Backbone(clf.backbone, clf.model_.body, clf.preprocessing_, clf.weights_info_)
    origin = _Source(
        labelled=None,
        known=set(),
        classes=list(clf.classes_),
        backbone=body,
        layers=tuple(clf.config_.layers),
        fast=clf.config_.fast,
        head=clf.model_.head.eval(),
        options=clf.decode_options_,
    )
    data = ((clf.metrics_ or {}).get("test") or {}).get("data") or {}
    path = data.get("path")
    if path and Path(path).exists():
        try:
            labelled, known = _labelled_from_path(Path(path), options=clf.decode_options_)
            origin.labelled = labelled.with_classes(origin.classes)
            origin.known = known
        except DataError as error:
            origin.notes.append(f"the model's training data {path} could not be read: {error}")
    else:
        origin.notes.append(
            "the model names no training data that is still on disk: pool images it was "
            "trained on cannot be told apart, and class coverage is not weighed"
        )
    return origin


def _labelled_from_path(path: Path, options: Any = None) -> tuple[ImageDataset, set[str]]:
    """(the images to fit on, the hashes of every labelled image there): a folder split
    into train/ and test/ (or IDX files) fits on its training part."""
    from headstart.data.layout import is_presplit, load_images, open_dataset

    kwargs = {} if options is None else {"options": options}
    if path.is_dir() and is_presplit(path):
        train, test = load_images(path, **kwargs)
        return train, set(train.content_hashes()) | set(test.content_hashes())
    labelled = open_dataset(path, **kwargs)
    return labelled, set(labelled.content_hashes())


def _open_pool(unlabelled: Any, options: Any) -> ImageDataset:
    from headstart.data.loaders import load_csv, load_unlabelled

    kwargs = {} if options is None else {"options": options}
    if isinstance(unlabelled, ImageDataset):
        return unlabelled
    if not isinstance(unlabelled, str | os.PathLike):
        raise invalid(
            "suggest", "unlabelled", "a folder of images, a CSV or an ImageDataset", unlabelled
        )
    path = Path(unlabelled)
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_csv(path, **kwargs)
    return load_unlabelled(path, **kwargs)


def _check_pool_path(unlabelled: Any) -> None:
    if isinstance(unlabelled, str | os.PathLike) and not Path(unlabelled).exists():
        raise DataError(
            f"The pool of unlabelled images {unlabelled} does not exist.",
            hint="Give {unlabelled} a folder of images (searched recursively) or a CSV.",
        )


def _distinct_pool(pool: ImageDataset, known: set[str]) -> tuple[ImageDataset, list[str]]:
    """The pool without labelled images (by content) and with each image once."""
    seen = set(known)
    keep, labelled, repeated = [], 0, 0
    for i, h in enumerate(pool.content_hashes()):
        if h in seen:
            labelled += h in known
            repeated += h not in known
            continue
        seen.add(h)
        keep.append(i)
    notes = []
    if labelled:
        notes.append(f"{labelled} pool images are already labelled (same content): left out")
    if repeated:
        notes.append(f"{repeated} pool images repeat another pool image: counted once")
    return pool.subset(np.asarray(keep, dtype=np.int64)), notes


def _described(unlabelled: Any) -> str:
    return str(unlabelled) if isinstance(unlabelled, str | os.PathLike) else repr(unlabelled)
