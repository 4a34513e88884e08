"""What a prediction gives back, whatever runs the model: the top classes of an image,
files in bulk with their skipped ones, scores checked for NaN, labels in the model's
order. Torch-free, so a model exported to ONNX predicts with the same rules (and the
same words) as the PyTorch one, where torch is not installed. ``PredictsFiles`` is the
``predict_files`` interface every classifier kind shares, written once here."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart._internal.validation import positive_int
from headstart.data.dataset import ImageDataset, SkippedFile
from headstart.data.decode import (
    IMAGE_EXTENSIONS,
    DecodeOptions,
    check_image_array,
    decode_array,
    decode_image,
    normalise_image,
)
from headstart.data.loaders import image_files
from headstart.errors import DataError, ImageDecodeError, WeightsError
from headstart.estimator.tta import check_tta

__all__ = [
    "Prediction",
    "PredictsFiles",
    "check_finite_scores",
    "check_image_inputs",
    "image_input",
    "labels_in_model_order",
    "predict_image_files",
]


@dataclass(frozen=True)
class Prediction:
    """The top classes for one image, most probable first."""

    source: str  # the file path
    top: tuple[tuple[str, float], ...]  # (class name, probability)

    @property
    def label(self) -> str:
        return self.top[0][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.source,
            "predictions": [{"class": name, "probability": p} for name, p in self.top],
        }


class PredictsFiles:
    """``predict_files``, the same for every classifier kind (``ImageClassifier``, its
    ensemble, ``OnnxClassifier``): each kind gives ``classes_``, ``decode_options_`` and
    the hook ``_proba_of_images`` (class probabilities of decoded images, unchecked),
    and may refine ``_check_ready`` (raise if it cannot predict yet, or not on the
    device asked for) and ``_model_origin`` (the file or folder its errors name)."""

    classes_: list[str]
    decode_options_: DecodeOptions

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        top_k: int = 3,
        chunk_size: int = 256,
        batch_size: int = 64,
        device: str = "auto",
        strict: bool = False,
        tta: str | None = None,
    ) -> tuple[list[Prediction], list[SkippedFile]]:
        """The ``top_k`` classes of image files (folders are searched recursively), most
        probable first, as (predictions, skipped files). Files are decoded ``chunk_size``
        at a time, so a folder of 10,000 photos never sits decoded in memory at once; a
        file that cannot be decoded is returned with its reason, and the others are
        predicted (with ``strict=True`` it raises ImageDecodeError instead). ``tta``:
        test-time augmentation, as in ``predict_proba`` (None: the model's default)."""
        owner = f"{type(self).__name__}.predict_files"
        self._check_ready(owner, device)
        positive_int(owner, "batch_size", batch_size)
        if tta is not None:
            check_tta(owner, tta)
        return predict_image_files(
            paths,
            lambda images: self._proba_of_images(
                images, batch_size=batch_size, device=device, tta=tta
            ),
            classes=self.classes_,
            options=self.decode_options_,
            top_k=top_k,
            chunk_size=chunk_size,
            strict=strict,
            owner=owner,
            model=self._model_origin(),
        )

    def _check_ready(self, owner: str, device: str) -> None:
        """Raise if this classifier cannot predict yet, or not on ``device`` (by default
        it always can); ``owner`` names the caller."""

    def _model_origin(self) -> Path | None:
        """The file or folder the model came from, named by errors about its answers."""
        return None

    def _proba_of_images(
        self, images: list[Image.Image], *, batch_size: int, device: str, tta: str | None = None
    ) -> np.ndarray:
        """Class probabilities of decoded images, shape (N, len(classes_)), with test-time
        augmentation ``tta`` (None: the model's default)."""
        raise NotImplementedError(f"{type(self).__name__} does not score images")


def predict_image_files(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    proba: Callable[[list[Image.Image]], np.ndarray],
    *,
    classes: Sequence[str],
    options: DecodeOptions,
    top_k: int,
    chunk_size: int,
    strict: bool,
    owner: str,
    model: Path | None = None,
) -> tuple[list[Prediction], list[SkippedFile]]:
    """The ``top_k`` classes of image files (folders searched recursively), as
    (predictions, skipped files), with ``proba`` scoring decoded images. Files are
    decoded ``chunk_size`` at a time, so a folder of 10,000 photos never sits decoded in
    memory at once; a file that cannot be decoded is returned with its reason and the
    others are predicted (``strict=True`` raises ImageDecodeError instead). ``owner``
    names the caller in errors; ``model`` the model's file or folder, if it has one."""
    positive_int(owner, "top_k", top_k)
    positive_int(owner, "chunk_size", chunk_size)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files = image_files(paths)
    if not files:
        named = ", ".join(str(p) for p in paths)
        raise DataError(
            f"No image files in {named} (folders are searched recursively for "
            f"{' '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    k = min(top_k, len(classes))
    predictions: list[Prediction] = []
    skipped: list[SkippedFile] = []
    for start in range(0, len(files), chunk_size):
        images, sources = [], []
        for path in files[start : start + chunk_size]:
            try:
                images.append(decode_image(path, options)[0])
                sources.append(str(path))
            except ImageDecodeError as exc:
                if strict:
                    raise
                skipped.append(SkippedFile(str(path), exc.reason))
        if not images:
            continue
        scores = check_finite_scores(proba(images), sources, model)  # named by file
        for source, row in zip(sources, scores, strict=True):
            best = np.argsort(-row, kind="stable")[:k]
            top = tuple((classes[i], float(row[i])) for i in best)
            predictions.append(Prediction(source, top))
    return predictions, skipped


def check_image_inputs(items: Sequence[Any]) -> list[Any]:
    """``items`` as a list, each checked to be a path, a PIL image or a uint8 array, so
    a ``None`` in a list of 10,000 fails before the first batch runs, naming its index."""
    items = list(items)
    for index, item in enumerate(items):
        if isinstance(item, np.ndarray):
            check_image_array(item, f"images[{index}]")
        elif not isinstance(item, str | os.PathLike | Image.Image):
            raise DataError(
                f"images[{index}]: a {type(item).__name__} is not an image; expected "
                "a file path, a PIL image or a uint8 array"
            )
    return items


def image_input(item: Any, index: int, options: DecodeOptions) -> Image.Image:
    """One checked input as an RGB image, decoded exactly as in training."""
    if isinstance(item, Image.Image):
        if 0 in item.size:  # PIL allows Image.new("RGB", (0, 0)); resizing it divides by 0
            width, height = item.size
            raise ImageDecodeError(f"images[{index}]", f"image has no pixels ({width}x{height})")
        return normalise_image(item, options)
    if isinstance(item, np.ndarray):
        return decode_array(item, f"images[{index}]")
    return decode_image(Path(item), options)[0]


def check_finite_scores(proba: np.ndarray, images: Any, folder: Path | None) -> np.ndarray:
    """``proba`` unchanged, or a WeightsError naming the model (its ``folder`` or file
    when it was loaded from one) and the images whose scores hold NaN or infinity. Such
    scores come from a damaged model (a NaN weight, a standard deviation of 0) and would
    otherwise be printed as ``nan%``, written as invalid JSON, or counted as wrong
    answers in an accuracy."""
    bad = np.flatnonzero(~np.isfinite(proba).all(axis=1)) if proba.size else []
    if len(bad) == 0:
        return proba
    names = [_image_name(images, int(i)) for i in bad[:3]]
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    origin = f"The model in {folder}" if folder is not None else "The model"
    raise WeightsError(
        f"{origin} gave non-finite scores (NaN or infinity) for {len(bad)} of "
        f"{len(proba)} image(s): {', '.join(names)}{more}; its weights or preprocessing "
        "are damaged."
    )


def _image_name(images: Any, i: int) -> str:
    if isinstance(images, ImageDataset):
        return images.source(i)
    item = list(images)[i] if not isinstance(images, Sequence) else images[i]
    return f"image {i} (in memory)" if isinstance(item, Image.Image) else str(item)


def labels_in_model_order(dataset: ImageDataset, classes: Sequence[str]) -> np.ndarray:
    """The dataset's labels as indices into the model's classes (a subset is fine)."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = [name for name in dataset.classes if name not in index]
    if unknown:
        raise DataError(
            f"The dataset has classes the model was not trained on: {unknown}; "
            f"the model knows {list(classes)}."
        )
    mapping = np.array([index[name] for name in dataset.classes], dtype=np.int64)
    return mapping[dataset.labels]
