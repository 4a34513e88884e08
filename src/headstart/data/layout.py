"""How a path is laid out, decided in one place: a folder of class folders, a CSV, a folder
already split into ``train/`` and ``test/`` class folders, or MNIST-style IDX files.

``load_images`` (train, compare), ``evaluation_set`` (evaluate) and the doctor (check)
decide it here, so the same path means the same images to every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.data.dataset import ImageDataset
from headstart.data.idx import find_idx_pair, load_idx
from headstart.data.loaders import load_csv, load_folder
from headstart.data.split import split_dataset
from headstart.errors import DataError

__all__ = ["evaluation_set", "is_presplit", "load_images", "open_dataset", "trained_on_split"]


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


def _split_folders(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _idx_pairs(folder: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]] | None:
    train, test = find_idx_pair(folder, "train"), find_idx_pair(folder, "t10k")
    return (train, test) if train is not None and test is not None else None


def is_presplit(path: str | Path) -> bool:
    """Whether ``path`` carries its own train/test split (``train/`` and ``test/`` class
    folders, or the train and t10k IDX files); then no split of ours is drawn."""
    folder = Path(path)
    return folder.is_dir() and (_split_folders(folder) or _idx_pairs(folder) is not None)


def load_images(
    path: str | Path, *, test_size: float = 0.2, seed: int = 0, **kwargs: Any
) -> tuple[ImageDataset, ImageDataset]:
    """Train and test sets from one path, using the split the data already has, if any.

    A folder with ``train/`` and ``test/`` class folders is used as split (``test_size``
    and ``seed`` are then unused); so is a folder with MNIST-style IDX files. Anything
    else goes through `open_dataset` and a stratified `split_dataset`.
    """
    folder = Path(path)
    if folder.is_dir() and _split_folders(folder):
        train = load_folder(folder / "train", **kwargs)
        test = load_folder(folder / "test", **kwargs)
        unknown = sorted(set(test.classes) - set(train.classes))
        if unknown:
            raise DataError(
                f"{folder / 'test'} has class folder(s) {', '.join(unknown)} that "
                f"{folder / 'train'} lacks; a model cannot be tested on classes it never saw"
            )
        classes = sorted(set(train.classes) | set(test.classes))
        return train.with_classes(classes), test.with_classes(classes)
    pairs = _idx_pairs(folder) if folder.is_dir() else None
    if pairs is not None:
        train = load_idx(*pairs[0], classes=kwargs.get("classes"))
        # The test labels are read against train's classes: a t10k file lacking the
        # last class still lines up, and a label train never had is refused.
        return train, load_idx(*pairs[1], classes=train.classes)
    return split_dataset(open_dataset(folder, **kwargs), test_size=test_size, seed=seed)


def evaluation_set(path: str | Path, **kwargs: Any) -> ImageDataset:
    """The labelled images to evaluate a model on: the test part of pre-split data (the
    ``test/`` folder, the t10k IDX files), else every image at ``path``."""
    folder = Path(path)
    if folder.is_dir() and _split_folders(folder):
        return open_dataset(folder / "test", **kwargs)
    pairs = _idx_pairs(folder) if folder.is_dir() else None
    if pairs is not None:
        return load_idx(*pairs[1])
    return open_dataset(folder, **kwargs)


def trained_on_split(
    path: str | Path, source: dict[str, Any] | None, **kwargs: Any
) -> ImageDataset | None:
    """The test split a model held out of ``path``, when ``path`` is the data it was
    trained on (``source``: what train recorded, ``{"path", "test_size", "seed"}``); None
    for other data, or data with its own split (`evaluation_set` takes its test part).

    Scoring every image of the training folder would count the images the model learnt
    from; the same split again (the same function, size and seed) gives train's test set,
    as long as the folder is unchanged."""
    if not source or not source.get("path"):
        return None
    folder = Path(path)
    if not folder.exists() or folder.resolve() != Path(source["path"]).resolve():
        return None
    if folder.is_dir() and (_split_folders(folder) or _idx_pairs(folder) is not None):
        return None
    test_size, seed = source.get("test_size", 0.2), source.get("seed", 0)
    return load_images(folder, test_size=test_size, seed=seed, **kwargs)[1]
