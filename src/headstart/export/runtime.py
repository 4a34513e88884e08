"""Predicting from an exported file with ONNX Runtime: no torch, no timm.

``OnnxClassifier`` answers like a loaded ``ImageClassifier`` (``classes_``,
``predict_proba``, ``predict_files``, ``evaluate``), from the file and its card alone:
images are decoded by headstart's own decoder, resized and cropped with Pillow as the
PyTorch model did, and handed to the graph as uint8 pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart._internal.validation import invalid, positive_int
from headstart.backbones.preprocessing import Preprocessing
from headstart.data.dataset import ImageDataset
from headstart.data.decode import DecodeOptions
from headstart.errors import DataError
from headstart.estimator.results import (
    PredictsFiles,
    check_finite_scores,
    check_image_inputs,
    image_input,
    labels_in_model_order,
)
from headstart.estimator.tta import DEFAULT_TTA, average_views, check_tta, tta_views, view_count
from headstart.export.contract import INPUT_NAME, card_from_props, check_output_width, image_pixels

# These live in export.session (contract reads a card with them too); still importable here.
from headstart.export.session import INSTALL_HINT, open_session, session_from_bytes  # noqa: F401
from headstart.train.metrics import classification_metrics

__all__ = ["OnnxClassifier", "open_session", "session_from_bytes"]


class OnnxClassifier(PredictsFiles):
    """A classifier exported by ``headstart export``, run by ONNX Runtime (on the CPU:
    a ``device`` other than "auto" or "cpu" is refused). ``predict_files`` is the one
    every classifier kind has (``results.PredictsFiles``). Test-time augmentation is
    done here, outside the graph, with the views the PyTorch model uses
    (``estimator.tta``); its default is the one the card records (``tta_``)."""

    def __init__(self, path: Path, session: Any, card: dict[str, Any]) -> None:
        self.path = path
        self.session = session
        self.card = card
        self.classes_: list[str] = list(card["classes"])
        self.preprocessing_ = Preprocessing.from_dict(card["preprocessing"])
        self.decode_options_ = DecodeOptions(**(card.get("decode_options") or {}))
        self.backbone = card["backbone"]
        self.strategy = card["strategy"]
        self.metrics_ = dict(card.get("metrics") or {})
        self.tta_ = str(card.get("tta", DEFAULT_TTA))  # checked with the card

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, threads: int | None = None) -> OnnxClassifier:
        if not isinstance(path, str | os.PathLike):
            raise invalid("OnnxClassifier.load", "path", "a path to an .onnx file", path)
        path = Path(path)
        if path.is_dir():
            raise DataError(
                f"{path} is a folder; give the .onnx file that `headstart export` wrote "
                f"(such as {path / 'model.onnx'})."
            )
        session = open_session(path, threads)
        card = card_from_props(dict(session.get_modelmeta().custom_metadata_map), path)
        for output in session.get_outputs():  # a width the graph states: checked now
            check_output_width(output.shape, card, path)
        return cls(path, session, card)

    def metadata(self) -> dict[str, Any]:
        """The model card the file carries."""
        return dict(self.card)

    def pixels(self, images: Sequence[Any]) -> np.ndarray:
        """Paths, PIL images or uint8 arrays, decoded as in training, as the graph's
        input: uint8 (N, H, W, 3)."""
        rows = [
            image_pixels(image_input(item, index, self.decode_options_), self.preprocessing_)
            for index, item in enumerate(check_image_inputs(images))
        ]
        height, width = self.preprocessing_.input_size[1:]
        return np.stack(rows) if rows else np.zeros((0, height, width, 3), np.uint8)

    def views_pixels(self, images: Sequence[Any], tta: str) -> np.ndarray:
        """``pixels`` with test-time augmentation ``tta``: each image's views
        (``estimator.tta.tta_views``) in a row, uint8 (N x views, H, W, 3)."""
        rows = [
            np.asarray(view, dtype=np.uint8)
            for index, item in enumerate(check_image_inputs(images))
            for view in tta_views(
                image_input(item, index, self.decode_options_), self.preprocessing_, tta
            )
        ]
        height, width = self.preprocessing_.input_size[1:]
        return np.stack(rows) if rows else np.zeros((0, height, width, 3), np.uint8)

    def tta_views(self, tta: str | None = None) -> int:
        """Forward passes per image that predicting with ``tta`` makes (None: ``tta_``)."""
        return view_count(check_tta("OnnxClassifier.predict_proba", tta, self.tta_),
                          self.preprocessing_)  # fmt: skip

    def predict_proba(
        self,
        images: ImageDataset | Sequence[Any],
        *,
        batch_size: int = 64,
        tta: str | None = None,
    ):
        """Class probabilities, shape (N, len(classes_)), as ``ImageClassifier``'s;
        ``tta`` as there (None: the card's, ``tta_``)."""
        positive_int("OnnxClassifier.predict_proba", "batch_size", batch_size)
        tta = check_tta("OnnxClassifier.predict_proba", tta, self.tta_)
        if isinstance(images, str | os.PathLike):
            raise invalid("OnnxClassifier.predict_proba", "images", "a list of images", images)
        return check_finite_scores(self._scores(images, batch_size, tta), images, self.path)

    def _scores(
        self, images: ImageDataset | Sequence[Any], batch_size: int, tta: str | None = None
    ) -> np.ndarray:
        items = list(images) if not isinstance(images, ImageDataset) else images
        tta = check_tta("OnnxClassifier.predict_proba", tta, self.tta_)
        views = view_count(tta, self.preprocessing_)
        chunks = []
        for start in range(0, len(items), batch_size):
            if isinstance(items, ImageDataset):
                batch = [items.image(i) for i in range(start, min(start + batch_size, len(items)))]
            else:
                batch = items[start : start + batch_size]
            if views == 1:
                chunks.append(self.run(self.pixels(batch)))
            else:
                chunks.append(average_views(self.run(self.views_pixels(batch, tta)), views))
        if not chunks:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        return np.concatenate(chunks)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """The graph's probabilities for a uint8 (N, H, W, 3) batch."""
        proba = self.session.run(["probabilities"], {INPUT_NAME: pixels})[0]
        check_output_width(proba.shape, self.card, self.path)  # a symbolic width: now
        return proba

    def predict(
        self,
        images: ImageDataset | Sequence[Any],
        *,
        batch_size: int = 64,
        tta: str | None = None,
    ):
        proba = self.predict_proba(images, batch_size=batch_size, tta=tta)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(1)]

    def _model_origin(self) -> Path:
        return self.path

    def _check_ready(self, owner: str, device: str) -> None:
        if device not in ("auto", "cpu"):
            raise invalid(owner, "device", "'auto' or 'cpu' (ONNX Runtime runs the model on "
                          "the CPU here)", device)  # fmt: skip

    def _proba_of_images(
        self, images: list[Any], *, batch_size: int, device: str, tta: str | None = None
    ) -> np.ndarray:
        return self._scores(images, batch_size, tta)

    def evaluate(
        self, dataset: ImageDataset, *, batch_size: int = 64, tta: str | None = None
    ) -> dict[str, Any]:
        """Accuracy, balanced accuracy, per-class P/R/F1 and the confusion matrix;
        ``tta`` and ``tta_views`` say how it predicted."""
        tta = check_tta("OnnxClassifier.evaluate", tta, self.tta_)
        truth = labels_in_model_order(dataset, self.classes_)
        predicted = self.predict_proba(dataset, batch_size=batch_size, tta=tta).argmax(1)
        metrics = classification_metrics(truth, predicted, self.classes_)
        return {**metrics, "tta": tta, "tta_views": view_count(tta, self.preprocessing_)}
