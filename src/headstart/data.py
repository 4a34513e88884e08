"""Image collections: load them, check every file up front, split and sample them.

A dataset is a list of images (file paths decoded on access, or in-memory uint8
arrays) with integer labels and a stable class list. Every file is decoded once
while loading, so a corrupt, truncated or oversized file is found and reported
before training starts rather than in the middle of an epoch. The decoding
itself lives in :mod:`headstart.imageio` and is re-exported here.
"""

from __future__ import annotations

import copy
import csv
import gzip
import hashlib
import json
import math
import operator
import os
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headstart._validation import invalid
from headstart.errors import DataError, ImageDecodeError
from headstart.imageio import (
    IMAGE_EXTENSIONS,
    DecodeInfo,
    DecodeOptions,
    check_image_array,
    decode_array,
    decode_bytes,
    decode_image,
    read_image_bytes,
)

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "DecodeInfo",
    "DecodeOptions",
    "ImageDataset",
    "LoadReport",
    "SkippedFile",
    "UNLABELLED",
    "TorchImageDataset",
    "decode_array",
    "decode_image",
    "from_arrays",
    "load_csv",
    "load_fashion_mnist",
    "load_folder",
    "find_idx_pair",
    "load_idx",
    "load_images",
    "load_sample",
    "load_unlabelled",
    "open_dataset",
    "sample_per_class",
    "split_dataset",
]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist

_DEFAULT_OPTIONS = DecodeOptions()
# Reading and hashing run in parallel; Pillow's decode is serialised (see imageio).
_DECODE_WORKERS = min(4, os.cpu_count() or 1)
# Folders that archive tools create next to real content; never a class.
_ARTIFACT_FOLDERS = frozenset({"__MACOSX"})
UNLABELLED = "(unlabelled)"  # the placeholder class of load_unlabelled
_FIRST_BAD_SHOWN = 5


# --------------------------------------------------------------------------- report


@dataclass
class SkippedFile:
    """One file left out of a dataset, and why."""

    path: str
    reason: str


@dataclass
class LoadReport:
    """What loading found, so nothing about the data is decided silently."""

    source: str  # what was loaded: a folder, a CSV, an IDX file or "arrays"
    total: int  # candidate images seen
    loaded: int
    skipped: list[SkippedFile] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)  # EXIF orientation applied
    converted: dict[str, str] = field(default_factory=dict)  # path -> what was converted
    downscaled: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # non-image files and hidden entries

    def summary(self) -> str:
        """A few human-readable lines: counts, then one line per skipped file."""
        head = f"Loaded {self.loaded} of {self.total} images from {self.source}"
        lines = [f"{head}; skipped {len(self.skipped)}:" if self.skipped else f"{head}."]
        lines += [f"  {skipped.path}: {skipped.reason}" for skipped in self.skipped]
        if self.rotated:
            lines.append(f"Applied EXIF orientation to {len(self.rotated)} image(s).")
        if self.converted:
            kinds = Counter(self.converted.values())
            described = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            lines.append(f"Converted {len(self.converted)} image(s) to RGB: {described}.")
        if self.downscaled:
            lines.append(f"Downscaled {len(self.downscaled)} large image(s) while decoding.")
        if self.ignored:
            examples = ", ".join(self.ignored[:3]) + (", ..." if len(self.ignored) > 3 else "")
            lines.append(f"Ignored {len(self.ignored)} non-image or hidden entries ({examples}).")
        return "\n".join(lines)


# --------------------------------------------------------------------------- dataset


class ImageDataset:
    """Images (file paths decoded on access, or in-memory uint8 arrays) with integer labels
    and a stable class list.

    Build one with a loader (`load_folder`, `load_csv`, `load_idx`, `from_arrays`, ...);
    the constructor trusts that its inputs were checked by one.
    """

    def __init__(
        self,
        *,
        classes: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        sources: Sequence[str],
        content_hashes: Sequence[str],
        report: LoadReport,
        options: DecodeOptions = _DEFAULT_OPTIONS,
        arrays: Sequence[np.ndarray] | np.ndarray | None = None,
        original_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.classes: list[str] = list(classes)
        self.labels: np.ndarray = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.report = report
        self.options = options
        self._sources = list(sources)
        self._hashes = list(content_hashes)
        self._arrays = arrays
        self._sizes = list(original_sizes) if original_sizes is not None else None
        sizes = {len(self.labels), len(self._sources), len(self._hashes)}
        if arrays is not None:
            sizes.add(len(arrays))
        if self._sizes is not None:
            sizes.add(len(self._sizes))
        if len(sizes) != 1:
            raise DataError(
                f"ImageDataset from {report.source}: labels, sources, hashes, sizes and images "
                f"differ in length ({sorted(sizes)})"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(
                f"ImageDataset from {report.source}: labels must lie in 0..{len(self.classes) - 1}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        index = self._index(i)
        return self.image(index), int(self.labels[index])

    def __iter__(self) -> Iterator[tuple[Image.Image, int]]:
        for index in range(len(self)):
            yield self[index]

    def image(self, i: int) -> Image.Image:
        """The RGB image at ``i``; files are decoded again, exactly as when loading."""
        index = self._index(i)
        if self._arrays is not None:
            return decode_array(self._arrays[index], self._sources[index])
        return decode_image(self._sources[index], self.options)[0]

    def source(self, i: int) -> str:
        """The file path of item ``i``, or ``"<source>[k]"`` for an in-memory array."""
        return self._sources[self._index(i)]

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.classes)}

    def class_counts(self) -> dict[str, int]:
        """Items per class, in class order, including classes with none."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(count) for name, count in zip(self.classes, counts, strict=True)}

    def content_hashes(self) -> list[str]:
        """SHA-256 (hex) of each item's raw file bytes, or of its array's dtype, shape and bytes.

        For files these were computed from the very bytes that were decoded while loading,
        so equal hashes across a train/test split mean byte-identical images.
        """
        return list(self._hashes)

    def original_sizes(self) -> list[tuple[int, int] | None]:
        """(width, height) of each item as stored, before EXIF rotation or downscaling.

        Recorded by the up-front decode, so checks such as the data doctor's "tiny
        image" need no second decode; arrays give their shape; None where unknown.
        """
        if self._sizes is not None:
            return list(self._sizes)
        if isinstance(self._arrays, np.ndarray):
            height, width = self._arrays.shape[1:3]
            return [(int(width), int(height))] * len(self)
        if self._arrays is not None:
            return [(int(a.shape[1]), int(a.shape[0])) for a in self._arrays]
        return [None] * len(self)

    def fingerprint(self) -> str:
        """One SHA-256 over contents, order, labels and classes: any change changes it."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.classes).encode())
        digest.update(self.labels.astype("<i8").tobytes())
        digest.update("\n".join(self._hashes).encode())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        """The items at ``indices`` (in that order), with the same classes and a copied report."""
        picked = np.asarray(indices)
        if picked.size == 0:
            picked = picked.astype(np.int64)
        if picked.ndim != 1 or not np.issubdtype(picked.dtype, np.integer):
            raise invalid("ImageDataset.subset", "indices", "a 1-D sequence of ints", indices)
        if picked.size and (picked.min() < 0 or picked.max() >= len(self)):
            raise invalid(
                "ImageDataset.subset", "indices", f"ints in [0, {len(self)})", picked.tolist()
            )
        arrays: Sequence[np.ndarray] | np.ndarray | None = None
        if isinstance(self._arrays, np.ndarray):
            arrays = self._arrays[picked]
        elif self._arrays is not None:
            arrays = [self._arrays[i] for i in picked]
        return ImageDataset(
            classes=self.classes,
            labels=self.labels[picked],
            sources=[self._sources[i] for i in picked],
            content_hashes=[self._hashes[i] for i in picked],
            report=copy.deepcopy(self.report),
            options=self.options,
            arrays=arrays,
            original_sizes=None if self._sizes is None else [self._sizes[i] for i in picked],
        )

    def without_labels(self) -> ImageDataset:
        """The same images under the one placeholder class ``UNLABELLED``."""
        unlabelled = self.subset(np.arange(len(self)))
        unlabelled.classes = [UNLABELLED]
        unlabelled.labels = np.zeros(len(self), dtype=np.int64)
        return unlabelled

    def excluding(self, *others: ImageDataset) -> tuple[ImageDataset, int]:
        """This dataset without the images (by content) that ``others`` hold: (rest, dropped)."""
        seen = {h for other in others if other is not None for h in other.content_hashes()}
        keep = [i for i, h in enumerate(self._hashes) if h not in seen]
        return self.subset(np.asarray(keep, dtype=np.int64)), len(self) - len(keep)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(n={len(self)}, classes={len(self.classes)}, "
            f"source={self.report.source!r})"
        )

    def _index(self, i: int) -> int:
        index = operator.index(i)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {i} is out of range for an ImageDataset of {len(self)} items")
        return index


class TorchImageDataset(torch.utils.data.Dataset):
    """An ImageDataset as a torch Dataset: ``(transform(image), label)`` per item."""

    def __init__(self, ds: ImageDataset, transform: Callable[[Image.Image], Any]) -> None:
        self.ds = ds
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, label = self.ds[i]
        return self.transform(image), label


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class _Inspected:
    """The outcome of decoding one file up front; the pixels themselves are dropped."""

    path: str
    content_hash: str | None
    info: DecodeInfo | None
    reason: str | None  # None when the file decoded


def _inspect_file(path: str, options: DecodeOptions) -> _Inspected:
    # Read once, hash those bytes, decode those bytes: the hash always describes
    # exactly what was checked.
    try:
        data = read_image_bytes(path, path)
        content_hash = hashlib.sha256(data).hexdigest()
        _, info = decode_bytes(data, options, path)
    except ImageDecodeError as error:
        return _Inspected(path, None, None, error.reason)
    return _Inspected(path, content_hash, info, None)


def _inspect_all(paths: list[str], options: DecodeOptions, *, strict: bool) -> list[_Inspected]:
    """Decode every file, in the given order; in strict mode stop at the first bad one."""
    results: list[_Inspected] = []
    with ThreadPoolExecutor(max_workers=_DECODE_WORKERS) as pool:
        for result in pool.map(lambda path: _inspect_file(path, options), paths):
            if strict and result.reason is not None:
                pool.shutdown(wait=False, cancel_futures=True)
                raise ImageDecodeError(result.path, result.reason)
            results.append(result)
    return results


def _check_load_arguments(
    owner: str, strict: bool, max_bad_fraction: float, options: DecodeOptions
) -> None:
    if not isinstance(strict, bool):
        raise invalid(owner, "strict", "a bool", strict)
    if not isinstance(options, DecodeOptions):
        raise invalid(owner, "options", "a DecodeOptions", options)
    if (
        isinstance(max_bad_fraction, bool)
        or not isinstance(max_bad_fraction, int | float)
        or not 0.0 <= max_bad_fraction <= 1.0
    ):
        raise invalid(owner, "max_bad_fraction", "a float in [0, 1]", max_bad_fraction)


def _dataset_from_files(
    source: str,
    items: list[tuple[str, str]],
    *,
    strict: bool,
    max_bad_fraction: float,
    options: DecodeOptions,
    ignored: list[str],
) -> ImageDataset:
    """Decode ``(path, class name)`` items and keep the good ones, or explain why not."""
    classes = sorted({class_name for _, class_name in items})
    results = _inspect_all([path for path, _ in items], options, strict=strict)
    bad = [result for result in results if result.reason is not None]
    if bad and len(bad) / len(results) > max_bad_fraction:
        shown = "\n".join(f"  {r.path}: {r.reason}" for r in bad[:_FIRST_BAD_SHOWN])
        more = (
            f"\n  ... and {len(bad) - _FIRST_BAD_SHOWN} more" if len(bad) > _FIRST_BAD_SHOWN else ""
        )
        raise DataError(
            f"{len(bad)} of {len(results)} images in {source} could not be decoded, more than "
            f"max_bad_fraction={max_bad_fraction}. First bad files:\n{shown}{more}\n"
            "Fix or remove these files, or raise max_bad_fraction."
        )

    good_per_class = Counter(
        class_name for (_, class_name), r in zip(items, results, strict=True) if r.reason is None
    )
    all_bad = [name for name in classes if good_per_class[name] == 0]
    if all_bad:
        raise DataError(
            f"{source}: every image of class(es) {', '.join(all_bad)} failed to decode, so "
            "these classes would have no examples. See the reasons with strict=True, or fix "
            "or remove those files."
        )

    class_to_idx = {name: index for index, name in enumerate(classes)}
    kept = [(r, class_name) for (_, class_name), r in zip(items, results, strict=True) if r.info]
    report = LoadReport(
        source=source,
        total=len(results),
        loaded=len(kept),
        skipped=[SkippedFile(r.path, r.reason) for r in bad if r.reason is not None],
        rotated=[r.path for r, _ in kept if r.info and r.info.rotated],
        converted={
            r.path: description
            for r, _ in kept
            if r.info and (description := _describe_conversion(r.info))
        },
        downscaled=[r.path for r, _ in kept if r.info and r.info.downscaled],
        ignored=ignored,
    )
    return ImageDataset(
        classes=classes,
        labels=[class_to_idx[class_name] for _, class_name in kept],
        sources=[r.path for r, _ in kept],
        content_hashes=[r.content_hash or "" for r, _ in kept],
        report=report,
        options=options,
        original_sizes=[r.info.original_size for r, _ in kept if r.info],
    )


def _describe_conversion(info: DecodeInfo) -> str | None:
    parts = [info.conversion] if info.conversion else []
    if info.frames > 1:
        parts.append(f"first of {info.frames} frames")
    return "; ".join(parts) or None


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan_class_folder(folder: Path) -> tuple[list[str], list[str]]:
    """Image files anywhere under ``folder`` (sorted by relative path), and what was ignored."""
    images: list[str] = []
    ignored: list[str] = []
    for directory, subdirectories, filenames in os.walk(folder):
        for name in sorted(subdirectories):
            if _is_hidden(name):
                ignored.append(os.path.join(directory, name))
        subdirectories[:] = sorted(name for name in subdirectories if not _is_hidden(name))
        for name in sorted(filenames):
            path = os.path.join(directory, name)
            if not _is_hidden(name) and _is_image_name(name):
                images.append(path)
            else:
                ignored.append(path)
    images.sort(key=lambda path: Path(path).relative_to(folder).as_posix())
    return images, ignored


def load_folder(
    path: str | Path,
    *,
    strict: bool = False,
    max_bad_fraction: float = 0.5,
    options: DecodeOptions = _DEFAULT_OPTIONS,
) -> ImageDataset:
    """Load a folder holding one sub-folder of images per class (searched recursively).

    Hidden entries and non-image files are ignored and listed in the report. Files are
    ordered by class name, then by path inside the class folder; with ``strict=True``
    the first bad file in that order raises. Otherwise bad files are skipped and
    reported, unless more than ``max_bad_fraction`` of them are bad.
    """
    _check_load_arguments("load_folder", strict, max_bad_fraction, options)
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected a folder with one sub-folder per class")

    ignored: list[str] = []
    class_folders: list[Path] = []
    loose_images = 0
    for entry in sorted(root.iterdir(), key=lambda entry: entry.name):
        if entry.is_dir() and not _is_hidden(entry.name) and entry.name not in _ARTIFACT_FOLDERS:
            class_folders.append(entry)
        else:
            ignored.append(str(entry))
            loose_images += entry.is_file() and _is_image_name(entry.name)
    if not class_folders:
        found = f"; found {loose_images} image files directly inside it" if loose_images else ""
        raise DataError(
            f"{root}: no class folders{found}. Expected one sub-folder per class, "
            f"e.g. {root / 'cat'}/*.jpg and {root / 'dog'}/*.jpg"
        )

    items: list[tuple[str, str]] = []
    empty: list[str] = []
    for folder in class_folders:
        images, ignored_inside = _scan_class_folder(folder)
        ignored += ignored_inside
        if not images:
            empty.append(folder.name)
        items += [(image, folder.name) for image in images]
    if empty:
        raise DataError(
            f"{root}: class folder(s) with no image files: {', '.join(empty)}. Every class "
            f"needs at least one image ({' '.join(sorted(IMAGE_EXTENSIONS))}); add images or "
            "remove the folder(s)."
        )
    return _dataset_from_files(
        str(root),
        items,
        strict=strict,
        max_bad_fraction=max_bad_fraction,
        options=options,
        ignored=ignored,
    )


def load_unlabelled(
    path: str | Path,
    *,
    strict: bool = False,
    max_bad_fraction: float = 0.5,
    options: DecodeOptions = _DEFAULT_OPTIONS,
) -> ImageDataset:
    """Every image under a folder (searched recursively), with no labels.

    For the ``semi-supervised`` strategy: images you have but have not labelled.
    Folder names are ignored, so a labelled folder works too (its labels unused).
    The dataset has one placeholder class, ``"(unlabelled)"``. Bad files are
    skipped and reported as in `load_folder`.
    """
    _check_load_arguments("load_unlabelled", strict, max_bad_fraction, options)
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: {'not a folder' if root.exists() else 'folder not found'}")
    images, ignored = _scan_class_folder(root)
    if not images:
        raise DataError(
            f"{root}: no image files found ({' '.join(sorted(IMAGE_EXTENSIONS))}), "
            "searched recursively"
        )
    return _dataset_from_files(
        str(root),
        [(image, UNLABELLED) for image in images],
        strict=strict,
        max_bad_fraction=max_bad_fraction,
        options=options,
        ignored=ignored,
    )


def load_csv(
    path: str | Path,
    *,
    root: str | Path | None = None,
    strict: bool = False,
    max_bad_fraction: float = 0.5,
    options: DecodeOptions = _DEFAULT_OPTIONS,
) -> ImageDataset:
    """Load images listed in a CSV with a header row naming ``path`` and ``label`` columns.

    Relative paths resolve against ``root``, or the CSV's own folder so a dataset
    folder can be moved as a whole. Extra columns are ignored; missing files are
    skipped and reported as "file not found".
    """
    _check_load_arguments("load_csv", strict, max_bad_fraction, options)
    csv_path = Path(path)
    base = Path(root) if root is not None else csv_path.parent
    items: list[tuple[str, str]] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [column.strip().lower() for column in next(reader, [])]
            missing = [column for column in ("path", "label") if column not in header]
            if missing:
                raise DataError(
                    f"{csv_path}: line 1: no {' or '.join(repr(c) for c in missing)} column in "
                    f"the header {header}; expected a header row with 'path' and 'label' columns "
                    "(extra columns are ignored)"
                )
            path_column, label_column = header.index("path"), header.index("label")
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                line = reader.line_num
                cells = {}
                for column, index in (("path", path_column), ("label", label_column)):
                    value = row[index].strip() if index < len(row) else ""
                    if not value:
                        raise DataError(f"{csv_path}: line {line}: empty or missing {column!r}")
                    cells[column] = value
                image_path = Path(cells["path"])
                resolved = image_path if image_path.is_absolute() else base / image_path
                items.append((str(resolved), cells["label"]))
    except FileNotFoundError:
        raise DataError(f"{csv_path}: CSV file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{csv_path}: cannot read CSV ({error})") from None
    if not items:
        raise DataError(
            f"{csv_path}: no rows after the header; expected one 'path,label' row per image"
        )
    return _dataset_from_files(
        str(csv_path),
        items,
        strict=strict,
        max_bad_fraction=max_bad_fraction,
        options=options,
        ignored=[],
    )


# --------------------------------------------------------------------------- arrays


def _array_hash(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _check_classes(classes: Sequence[str], owner: str) -> list[str]:
    names = list(classes) if not isinstance(classes, str) else None
    if (
        not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise invalid(owner, "classes", "a non-empty sequence of distinct class names", classes)
    return names


def _label_indices(
    labels: Sequence[int] | Sequence[str] | np.ndarray,
    classes: Sequence[str] | None,
    owner: str,
) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names for string labels (sorted) or int labels (0..C-1)."""
    names = _check_classes(classes, owner) if classes is not None else None
    # An integer array (IDX labels, 60,000 of them) skips the per-item type checks.
    is_int_array = isinstance(labels, np.ndarray) and labels.dtype.kind in "iu"
    values = [] if is_int_array else list(labels)
    if values and all(isinstance(v, str) for v in values):
        names = names if names is not None else sorted(set(values))
        lookup = {name: index for index, name in enumerate(names)}
        unknown = sorted(set(values) - set(lookup))
        if unknown:
            raise DataError(f"{owner}: labels {unknown[:5]} are not among the classes {names}")
        return np.array([lookup[v] for v in values], dtype=np.int64), names
    if is_int_array or all(
        isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in values
    ):
        indices = np.asarray(labels if is_int_array else values, dtype=np.int64).reshape(-1)
        count = len(names) if names is not None else int(indices.max(initial=-1)) + 1
        out_of_range = np.unique(indices[(indices < 0) | (indices >= count)])
        if out_of_range.size:
            raise DataError(
                f"{owner}: int labels must lie in 0..{count - 1} (one per class); "
                f"got {out_of_range[:5].tolist()}"
            )
        return indices, names if names is not None else [str(i) for i in range(count)]
    kinds = sorted({type(v).__name__ for v in values})
    raise DataError(
        f"{owner}: labels must be all class names (str) or all class indices (int); got {kinds}"
    )


def from_arrays(
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int] | Sequence[str] | np.ndarray,
    *,
    classes: Sequence[str] | None = None,
) -> ImageDataset:
    """Wrap in-memory uint8 images: an (N, H, W[, C]) array or a sequence of (H, W[, C]) arrays.

    String labels give sorted classes (or the order of ``classes``); int labels must lie
    in 0..C-1 and the class names default to "0", "1", ...
    """
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise DataError(
                f"from_arrays: images has shape {images.shape}; expected (N, H, W) or "
                "(N, H, W, C), or a sequence of (H, W[, C]) arrays"
            )
        stored: np.ndarray | list[np.ndarray] = images
        if len(images):
            check_image_array(images[0], "arrays[0]")  # one dtype and item shape for all
    else:
        stored = [np.asarray(image) for image in images]
        for index, image in enumerate(stored):
            check_image_array(image, f"arrays[{index}]")
    if len(stored) == 0:
        raise DataError("from_arrays: no images given")
    if len(labels) != len(stored):
        raise DataError(f"from_arrays: {len(stored)} images but {len(labels)} labels")
    indices, names = _label_indices(labels, classes, "from_arrays")
    return _dataset_from_arrays(stored, indices, names, source="arrays")


def _dataset_from_arrays(
    arrays: np.ndarray | list[np.ndarray], labels: np.ndarray, classes: list[str], *, source: str
) -> ImageDataset:
    count = len(arrays)
    return ImageDataset(
        classes=classes,
        labels=labels,
        sources=[f"{source}[{i}]" for i in range(count)],
        content_hashes=[_array_hash(array) for array in arrays],
        report=LoadReport(source=source, total=count, loaded=count),
        arrays=arrays,
    )


# --------------------------------------------------------------------------- IDX


def _parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Parse an IDX file (MNIST's format), gzipped or not, into a uint8 array."""
    if data[:2] == b"\x1f\x8b":  # gzip magic; file names are not trusted
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{name}: corrupt gzip data ({error})") from None
    expected_magic = f"0000080{ndim}"
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(
            f"{name}: not an IDX file (magic number {data[:4].hex() or 'missing'}, "
            f"expected {expected_magic})"
        )
    if data[2] != 0x08:
        raise DataError(
            f"{name}: IDX element type 0x{data[2]:02x} is not supported; expected 0x08 "
            "(unsigned byte)"
        )
    if data[3] != ndim:
        layout = "count, rows, columns" if ndim == 3 else "count"
        raise DataError(f"{name}: IDX file has {data[3]} dimensions; expected {ndim} ({layout})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{name}: IDX header is truncated ({len(data)} of {header_size} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected, found = math.prod(shape), len(data) - header_size
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{name}: IDX data {problem}: the header promises shape {shape} = {expected} "
            f"bytes, found {found}"
        )
    if shape[0] == 0 or (ndim == 3 and 0 in shape[1:]):
        raise DataError(f"{name}: IDX file holds no images (shape {shape})")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _dataset_from_idx(
    images_data: bytes,
    labels_data: bytes,
    *,
    images_name: str,
    labels_name: str,
    classes: Sequence[str] | None,
) -> ImageDataset:
    images = _parse_idx(images_data, images_name, ndim=3)
    labels = _parse_idx(labels_data, labels_name, ndim=1)
    if len(images) != len(labels):
        raise DataError(
            f"{images_name} holds {len(images)} images but {labels_name} holds {len(labels)} labels"
        )
    indices, names = _label_indices(labels.astype(np.int64), classes, labels_name)
    return _dataset_from_arrays(images, indices, names, source=images_name)


def _read_data_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read file ({error.strerror or error})") from None


def load_idx(
    images_path: str | Path,
    labels_path: str | Path,
    *,
    classes: Sequence[str] | None = None,
) -> ImageDataset:
    """Load an MNIST-style pair of IDX files (gzipped or not); images stay in memory as uint8."""
    return _dataset_from_idx(
        _read_data_file(images_path),
        _read_data_file(labels_path),
        images_name=str(images_path),
        labels_name=str(labels_path),
        classes=classes,
    )


def find_idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The images and labels files of one split ("train" or "t10k"), if both exist."""
    found = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        candidates = [  # the original names, and the "train-images.idx3-ubyte" variant
            folder / f"{split}-{kind}{dot}idx{ndim}-ubyte{gz}"
            for dot in ("-", ".")
            for gz in ("", ".gz")
        ]
        existing = [candidate for candidate in candidates if candidate.is_file()]
        if not existing:
            return None
        found.append(existing[0])
    return found[0], found[1]


def load_fashion_mnist(
    root: str | Path = DEFAULT_FASHION_MNIST_DIR,
) -> tuple[ImageDataset, ImageDataset]:
    """The full Fashion-MNIST (60,000 train and 10,000 test images) from its four IDX files."""
    folder = Path(root)
    train, test = find_idx_pair(folder, "train"), find_idx_pair(folder, "t10k")
    if train is None or test is None:
        raise DataError(
            f"Fashion-MNIST not found in {folder}: expected train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz]. Install it with `apt-get install "
            "dataset-fashion-mnist`, or pass a folder holding the 4 IDX files."
        )
    return (
        load_idx(*train, classes=FASHION_MNIST_CLASSES),
        load_idx(*test, classes=FASHION_MNIST_CLASSES),
    )


def load_sample() -> tuple[ImageDataset, ImageDataset]:
    """The bundled Fashion-MNIST sample: 100 train and 100 test images per class.

    Small enough to ship inside the package, so a demo and the tests run offline.
    """
    folder = resources.files(__package__) / "sample_data"

    def load(split: str) -> ImageDataset:
        images, labels = f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz"
        return _dataset_from_idx(
            (folder / images).read_bytes(),
            (folder / labels).read_bytes(),
            images_name=f"headstart/sample_data/{images}",
            labels_name=f"headstart/sample_data/{labels}",
            classes=FASHION_MNIST_CLASSES,
        )

    return load("train"), load("t10k")


# --------------------------------------------------------------------------- entry points


def open_dataset(path: str | Path, **kwargs: Any) -> ImageDataset:
    """Open a folder of class folders (`load_folder`) or a .csv file (`load_csv`)."""
    target = Path(path)
    if target.is_dir():
        return load_folder(target, **kwargs)
    if target.is_file() and target.suffix.lower() == ".csv":
        return load_csv(target, **kwargs)
    problem = "not found" if not target.exists() else "is neither a folder nor a .csv file"
    raise DataError(
        f"{target}: {problem}. Accepted: a folder with one sub-folder of images per class, "
        "or a .csv file with 'path' and 'label' columns"
    )


def _with_classes(ds: ImageDataset, classes: list[str]) -> ImageDataset:
    """The same items, labelled against a wider class list that contains ``ds.classes``."""
    lookup = {name: index for index, name in enumerate(classes)}
    remap = np.array([lookup[name] for name in ds.classes], dtype=np.int64)
    return ImageDataset(
        classes=classes,
        labels=remap[ds.labels] if len(ds) else ds.labels,
        sources=[ds.source(i) for i in range(len(ds))],
        content_hashes=ds.content_hashes(),
        report=ds.report,
        options=ds.options,
        arrays=ds._arrays,
        original_sizes=ds._sizes,
    )


def load_images(
    path: str | Path, *, test_size: float = 0.2, seed: int = 0, **kwargs: Any
) -> tuple[ImageDataset, ImageDataset]:
    """Train and test sets from one path, using the split the data already has, if any.

    A folder with ``train/`` and ``test/`` class folders is used as split (``test_size``
    and ``seed`` are then unused); so is a folder with MNIST-style IDX files. Anything
    else goes through `open_dataset` and a stratified `split_dataset`.
    """
    folder = Path(path)
    if folder.is_dir() and (folder / "train").is_dir() and (folder / "test").is_dir():
        train = load_folder(folder / "train", **kwargs)
        test = load_folder(folder / "test", **kwargs)
        unknown = sorted(set(test.classes) - set(train.classes))
        if unknown:
            raise DataError(
                f"{folder / 'test'} has class folder(s) {', '.join(unknown)} that "
                f"{folder / 'train'} lacks; a model cannot be tested on classes it never saw"
            )
        classes = sorted(set(train.classes) | set(test.classes))
        return _with_classes(train, classes), _with_classes(test, classes)
    if folder.is_dir():
        train_files, test_files = find_idx_pair(folder, "train"), find_idx_pair(folder, "t10k")
        if train_files is not None and test_files is not None:
            idx_kwargs = {k: v for k, v in kwargs.items() if k == "classes"}
            return load_idx(*train_files, **idx_kwargs), load_idx(*test_files, **idx_kwargs)
    return split_dataset(open_dataset(folder, **kwargs), test_size=test_size, seed=seed)


# --------------------------------------------------------------------------- splitting


def _test_count(test_size: float | int, total: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, int | float | np.number):
        raise invalid("split_dataset", "test_size", "a float in (0, 1) or an int >= 1", test_size)
    if isinstance(test_size, int | np.integer):
        if not 1 <= test_size <= total - 1:
            raise invalid(
                "split_dataset",
                "test_size",
                f"an int in [1, {total - 1}] for {total} items",
                test_size,
            )
        return int(test_size)
    if not 0.0 < test_size < 1.0:
        raise invalid("split_dataset", "test_size", "a float in (0, 1) or an int >= 1", test_size)
    return min(max(math.ceil(test_size * total), 1), total - 1)


def _stratified_test_counts(class_sizes: np.ndarray, n_test: int) -> np.ndarray:
    """Test items per class: proportional, at least one on each side for classes of >= 2."""
    low = np.where(class_sizes >= 2, 1, 0)
    high = np.where(class_sizes >= 2, class_sizes - 1, 0)
    if n_test < low.sum() or n_test > high.sum():
        raise DataError(
            f"a stratified split of {int(class_sizes.sum())} items needs between "
            f"{int(low.sum())} and {int(high.sum())} test items (one per class on each side "
            f"for every class with 2 or more items); test_size asks for {n_test}. Change "
            "test_size, or pass stratify=False."
        )
    ideal = class_sizes * (n_test / class_sizes.sum())
    counts = np.clip(np.floor(ideal).astype(np.int64), low, high)
    # Hand out (or take back) what flooring left over, largest (smallest) remainder first;
    # ties go to the earlier class, so the result is deterministic.
    remainder = ideal - counts
    shortfall = n_test - int(counts.sum())
    while shortfall > 0:
        for label in np.argsort(-remainder, kind="stable"):
            if shortfall > 0 and counts[label] < high[label]:
                counts[label] += 1
                shortfall -= 1
    while shortfall < 0:
        for label in np.argsort(remainder, kind="stable"):
            if shortfall < 0 and counts[label] > low[label]:
                counts[label] -= 1
                shortfall += 1
    return counts


def split_dataset(
    ds: ImageDataset, *, test_size: float | int = 0.2, seed: int = 0, stratify: bool = True
) -> tuple[ImageDataset, ImageDataset]:
    """Split into (train, test), seeded and deterministic.

    ``test_size`` is a fraction in (0, 1) (rounded up) or a count. Stratified, every
    class with at least two items lands on both sides; single-item classes go to train.
    Both sides keep the dataset's order.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise invalid("split_dataset", "seed", "an int >= 0", seed)
    if len(ds) < 2:
        raise DataError(f"cannot split {ds!r}: a split needs at least 2 items, it has {len(ds)}")
    n_test = _test_count(test_size, len(ds))
    rng = np.random.default_rng(seed)
    if stratify:
        class_sizes = np.bincount(ds.labels, minlength=len(ds.classes))
        counts = _stratified_test_counts(class_sizes, n_test)
        test_parts = [
            rng.permutation(np.flatnonzero(ds.labels == label))[:count]
            for label, count in enumerate(counts)
        ]
        test_indices = np.concatenate(test_parts) if test_parts else np.array([], np.int64)
    else:
        test_indices = rng.permutation(len(ds))[:n_test]
    in_test = np.zeros(len(ds), dtype=bool)
    in_test[test_indices] = True
    return ds.subset(np.flatnonzero(~in_test)), ds.subset(np.flatnonzero(in_test))


def sample_per_class(ds: ImageDataset, k: int, *, seed: int = 0) -> ImageDataset:
    """Exactly ``k`` items of every class, seeded (``labels_per_class`` experiments).

    Draws are nested: for one seed, the k=10 draw is part of the k=30 draw, because each
    class takes the first k items of its own seeded permutation. That permutation depends
    only on the seed and the class index, not on the other classes.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise invalid("sample_per_class", "k", "an int >= 1", k)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise invalid("sample_per_class", "seed", "an int >= 0", seed)
    counts = ds.class_counts()
    short = [f"{name!r} has {count}" for name, count in counts.items() if count < k]
    if short:
        raise DataError(
            f"sample_per_class: k={k} items per class asked for, but {', '.join(short)}; "
            "lower k or add images to those classes"
        )
    picked = [
        np.random.default_rng([seed, label]).permutation(np.flatnonzero(ds.labels == label))[:k]
        for label in range(len(ds.classes))
    ]
    return ds.subset(np.sort(np.concatenate(picked)))
