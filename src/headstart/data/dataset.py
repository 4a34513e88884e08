"""A dataset: images (file paths decoded on access, or in-memory uint8 arrays) with integer
labels, a stable class list, and the report of what loading found.

Build one with a loader (:mod:`headstart.data.loaders`, :mod:`headstart.data.arrays`,
:mod:`headstart.data.idx`); every file was decoded once while loading, so a corrupt,
truncated or oversized file is reported before training rather than mid-epoch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import operator
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from headstart._internal.text import printable
from headstart._internal.validation import invalid
from headstart.data.decode import (
    DecodeOptions,
    decode_array,
    decode_image,
    split_frame,
)
from headstart.data.dicom import DicomInfo
from headstart.errors import DataError, respell

__all__ = ["UNLABELLED", "ImageDataset", "LoadReport", "SkippedFile", "TorchImageDataset"]

_DEFAULT_OPTIONS = DecodeOptions()
UNLABELLED = "(unlabelled)"  # the placeholder class of load_unlabelled


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
    dicom: dict[str, DicomInfo] = field(default_factory=dict)  # path -> what the DICOM file was

    def summary(self, words: Mapping[str, str] | None = None) -> str:
        """A few human-readable lines: counts, then one line per skipped file (names
        escaped, so a file called ``a\nb.png`` stays on its line); ``words`` spell the
        settings a reason names (the CLI's ``--max-pixels``)."""
        head = f"Loaded {self.loaded} of {self.total} images from {printable(self.source)}"
        lines = [f"{head}; skipped {len(self.skipped)}:" if self.skipped else f"{head}."]
        lines += [
            printable(f"  {skipped.path}: {respell(skipped.reason, words)}")
            for skipped in self.skipped
        ]
        if self.rotated:
            lines.append(f"Applied EXIF orientation to {len(self.rotated)} image(s).")
        # DICOM files are counted by window rule below, not by each file's own numbers.
        converted = [how for path, how in self.converted.items() if path not in self.dicom]
        if converted:
            kinds = Counter(converted)
            described = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            lines.append(f"Converted {len(converted)} image(s) to RGB: {described}.")
        if self.downscaled:
            lines.append(f"Downscaled {len(self.downscaled)} large image(s) while decoding.")
        if self.dicom:
            windows = Counter(_window_kind(info.window) for info in self.dicom.values())
            described = ", ".join(f"{count} {kind}" for kind, count in sorted(windows.items()))
            lines.append(f"Read {len(self.dicom)} DICOM image(s): {described}.")
        if self.ignored:
            examples = ", ".join(map(printable, self.ignored[:3]))
            examples += ", ..." if len(self.ignored) > 3 else ""
            lines.append(f"Ignored {len(self.ignored)} non-image or hidden entries ({examples}).")
        return "\n".join(lines)


def _window_kind(window: str) -> str:
    """The rule without its numbers: "file window C=40 W=400" is "file window"."""
    return window.split(" C=")[0].split(" of ")[0]


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

    def groups(self) -> list[str]:
        """The file each item comes from: frames of one stack (``scan.dcm#frame=3``) share
        their file's, so a split keeps them on one side; every other item is its own."""
        return [str(split_frame(source)[0]) for source in self._sources]

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

    def with_classes(self, classes: Sequence[str]) -> ImageDataset:
        """The same items, labelled against a wider class list that contains ``classes``."""
        lookup = {name: index for index, name in enumerate(classes)}
        missing = [name for name in self.classes if name not in lookup]
        if missing:
            raise invalid(
                "ImageDataset.with_classes", "classes", f"a list holding {missing}", classes
            )
        remap = np.array([lookup[name] for name in self.classes], dtype=np.int64)
        return ImageDataset(
            classes=list(classes),
            labels=remap[self.labels] if len(self) else self.labels,
            sources=self._sources,
            content_hashes=self._hashes,
            report=self.report,
            options=self.options,
            arrays=self._arrays,
            original_sizes=self._sizes,
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

    def unlabelled_apart_from(self, *labelled: ImageDataset | None) -> tuple[ImageDataset, int]:
        """These images as unlabelled ones, without any that ``labelled`` sets hold (by
        content): (rest, dropped). A test image among them would flatter the test score,
        and a training image adds nothing. The one place that rule lives."""
        return self.without_labels().excluding(*labelled)

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


class TorchImageDataset:
    """An ImageDataset as a map-style dataset for torch's DataLoader:
    ``(transform(image), label)`` per item. (DataLoader needs only ``__len__`` and
    ``__getitem__``, so the data room never imports torch.)"""

    def __init__(self, ds: ImageDataset, transform: Callable[[Image.Image], Any]) -> None:
        self.ds = ds
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, label = self.ds[i]
        return self.transform(image), label
