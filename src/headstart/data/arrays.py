"""In-memory images: NumPy arrays with int or string labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from headstart._internal.hashing import array_sha256
from headstart._internal.validation import invalid
from headstart.data.dataset import ImageDataset, LoadReport
from headstart.data.decode import (
    check_image_array,
)
from headstart.errors import DataError

__all__ = ["from_arrays", "label_indices"]


def _check_classes(classes: Sequence[str], owner: str) -> list[str]:
    names = list(classes) if not isinstance(classes, str) else None
    if (
        not names
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != len(names)
    ):
        raise invalid(owner, "classes", "a non-empty sequence of distinct class names", classes)
    return names


def label_indices(
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
        if names is not None:
            _check_range(indices, names, owner)
            return indices, names
        return indices, _names_from_indices(indices, owner)
    kinds = sorted({type(v).__name__ for v in values})
    raise DataError(
        f"{owner}: labels must be all class names (str) or all class indices (int); got {kinds}"
    )


def _check_range(indices: np.ndarray, names: list[str], owner: str) -> None:
    """Refuse int labels that name no class: an index past the names would otherwise
    become a class of its own, or break training later, far from its cause."""
    out_of_range = np.unique(indices[(indices < 0) | (indices >= len(names))])
    if out_of_range.size:
        raise DataError(
            f"{owner}: int labels must lie in 0..{len(names) - 1}, one per class of "
            f"{_shown(names)}; got {out_of_range[:5].tolist()}"
            + (f" and {out_of_range.size - 5} more" if out_of_range.size > 5 else "")
        )


def _names_from_indices(indices: np.ndarray, owner: str) -> list[str]:
    """Class names "0".."C-1" for int labels given without names. Refused when some index
    below the largest has no image: labels [0, 1, 2, 7] would silently add four empty
    classes that the split, the loss and the metrics then carry. Remapping is not done,
    since it would change what an int label means; naming the classes says it on purpose."""
    negative = np.unique(indices[indices < 0])
    if negative.size:
        raise DataError(f"{owner}: int labels must be >= 0; got {negative[:5].tolist()}")
    count = int(indices.max(initial=-1)) + 1
    present = np.unique(indices)
    if present.size != count:
        missing = sorted(set(range(count)) - set(present.tolist()))
        raise DataError(
            f"{owner}: int labels {_shown(present.tolist())} leave classes "
            f"{_shown(missing)} without any image; int labels must be 0..C-1 with every "
            "class present",
            hint="Pass {classes} naming every class (empty ones included), or use string labels.",
        )
    return [str(i) for i in range(count)]


def _shown(values: list) -> str:
    """A list for a message, shortened past ten items (a 60,000-label file stays one line)."""
    if len(values) <= 10:
        return str(list(values))
    return f"[{', '.join(map(str, values[:10]))}, ... ({len(values)} in all)]"


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
    indices, names = label_indices(labels, classes, "from_arrays")
    return dataset_from_arrays(stored, indices, names, source="arrays")


def dataset_from_arrays(
    arrays: np.ndarray | list[np.ndarray], labels: np.ndarray, classes: list[str], *, source: str
) -> ImageDataset:
    count = len(arrays)
    return ImageDataset(
        classes=classes,
        labels=labels,
        sources=[f"{source}[{i}]" for i in range(count)],
        content_hashes=[array_sha256(array) for array in arrays],
        report=LoadReport(source=source, total=count, loaded=count),
        arrays=arrays,
    )
