"""Splitting: a stratified, seeded train/test split, and k labelled images per class."""

from __future__ import annotations

import math
import numbers

import numpy as np

from headstart._internal.validation import check_int, invalid, positive_int
from headstart.data.dataset import ImageDataset
from headstart.errors import DataError

__all__ = ["sample_per_class", "split_dataset"]


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
            f"for every class with 2 or more items), not {n_test}.",
            hint="Change {test_size}.",
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
    groups = ds.groups()
    if len(set(groups)) < len(groups):
        return _split_groups(ds, groups, n_test, seed, stratify)
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


def _split_groups(
    ds: ImageDataset, groups: list[str], n_test: int, seed: int, stratify: bool
) -> tuple[ImageDataset, ImageDataset]:
    """The split drawn over files, not frames: every frame of a stack lands on the side
    its file does (a test frame next to its training neighbours would flatter the score).
    ``n_test`` frames asked for become the share of files it is of all items."""
    first: dict[str, int] = {}
    for index, name in enumerate(groups):
        first.setdefault(name, index)
    files = ds.subset(np.array(list(first.values())))  # one item per file, labelled as it
    if len(files) < 2:
        raise DataError(
            f"cannot split {ds!r}: its {len(ds)} frames come from one file, and a file's "
            "frames stay on one side of a split; add files"
        )
    share = min(max(round(n_test / len(ds) * len(files)), 1), len(files) - 1)
    _, test_files = split_dataset(files, test_size=share, seed=seed, stratify=stratify)
    in_test = np.isin(groups, test_files.groups())
    return ds.subset(np.flatnonzero(~in_test)), ds.subset(np.flatnonzero(in_test))


def sample_per_class(ds: ImageDataset, k: int, *, seed: int = 0) -> ImageDataset:
    """Exactly ``k`` items of every class, seeded (``labels_per_class`` experiments).

    Draws are nested: for one seed, the k=10 draw is part of the k=30 draw, because each
    class takes the first k items of its own seeded permutation. That permutation depends
    only on the seed and the class index, not on the other classes.
    """
    positive_int("sample_per_class", "k", k, kind=numbers.Integral)  # NumPy's ints too
    check_int("sample_per_class", "seed", seed, low=0)
    counts = ds.class_counts()
    short = [f"{name!r} has {count}" for name, count in counts.items() if count < k]
    if short:
        raise DataError(
            f"{k} images per class asked for, but {', '.join(short)}.",
            hint="Lower {k}, or add images to those classes.",
        )
    picked = [
        np.random.default_rng([seed, label]).permutation(np.flatnonzero(ds.labels == label))[:k]
        for label in range(len(ds.classes))
    ]
    return ds.subset(np.sort(np.concatenate(picked)))
