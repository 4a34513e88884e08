"""What the server predicts through: a small protocol, so the torch estimator and the
ONNX runtime plug in the same way (one adapter over their shared public API)."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from headstart.data.decode import DecodeOptions
from headstart.errors import ConfigError

__all__ = ["RUNTIMES", "EstimatorPredictor", "Predictor", "load_predictor"]

RUNTIMES = ("torch", "onnx")

HEATMAP_SIDE = 384  # pixels, the longer edge of a heatmap the server sends
# What /v1/model shows of a model's metadata (the rest, e.g. its history, stays home).
_DESCRIBED = ("backbone", "strategy", "classes", "metrics", "preprocessing", "decode_options")


class Predictor(Protocol):
    """A fitted model the server can use from one worker thread."""

    classes: list[str]
    decode_options: DecodeOptions

    def predict_proba(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Probabilities, shape (len(images), len(classes)), rows summing to 1."""

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: classes, backbone, strategy, metrics, ..."""


class EstimatorPredictor:
    """Adapter for anything shaped like ``ImageClassifier``: ``classes_``,
    ``predict_proba(images)``, ``metadata()`` and ``decode_options_`` (the ONNX runtime's
    ``OnnxClassifier`` has the same four). ``tta``: the test-time augmentation every
    prediction uses (None: the model's default); ``views`` is what it costs, in
    forward passes per image, which the batcher counts against its limits."""

    def __init__(
        self, estimator: Any, *, runtime: str = "torch", source: str = "", tta: str | None = None
    ) -> None:
        self.estimator = estimator
        self.runtime = runtime
        self.source = source  # shown to the operator's logs only, never sent to clients
        self.classes = list(estimator.classes_)
        self.decode_options = estimator.decode_options_
        self._metadata = estimator.metadata()
        self.tta = tta
        counts = getattr(estimator, "tta_views", None)  # a model without TTA: one pass
        self.views = counts(tta) if counts is not None else 1
        # Grad-CAM runs beside the batcher's worker; one model, used by one thread at a time.
        self._lock = threading.Lock()

    @property
    def can_explain(self) -> bool:
        """Whether ``explain`` works: a PyTorch model (an ONNX file has no gradients)."""
        return hasattr(self.estimator, "explain")

    def predict_proba(self, images: Sequence[Image.Image]) -> np.ndarray:
        options = {} if self.tta is None else {"tta": self.tta}
        with self._lock:
            proba = self.estimator.predict_proba(list(images), **options)
        return np.asarray(proba, dtype=np.float32)

    def explain(self, images: Sequence[Image.Image], classes: Sequence[str]) -> list[bytes]:
        """Per image, a PNG of its Grad-CAM heatmap for the class named beside it, over the
        image (at most ``HEATMAP_SIDE`` pixels on its longer edge, its aspect kept)."""
        if not self.can_explain:
            raise ConfigError(f"A {self.runtime} model cannot explain its predictions.")
        with self._lock:
            explained = self.estimator.explain(list(images), classes=list(classes))
        pngs = []
        for item in explained:
            picture = item.overlay()
            picture.thumbnail((HEATMAP_SIDE, HEATMAP_SIDE))
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            pngs.append(buffer.getvalue())
        return pngs

    def describe(self) -> dict[str, Any]:
        described = {name: self._metadata.get(name) for name in _DESCRIBED}
        described["tta"] = {"mode": self.tta or _default_tta(self.estimator),
                            "views": self.views}  # fmt: skip
        # `headstart train` records where its test data was (metrics.test.data.path): the
        # operator's folders are no business of a client's.
        described["metrics"] = _without_paths(described["metrics"])
        described["runtime"] = self.runtime
        described["explain"] = self.can_explain
        return described


def _without_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k != "path"}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


def _default_tta(estimator: Any) -> str:
    from headstart.estimator.tta import DEFAULT_TTA

    return str(getattr(estimator, "tta_", DEFAULT_TTA))  # an ONNX card may record one


def load_predictor(
    path: str | os.PathLike[str], runtime: str = "torch", *, tta: str | None = None
) -> EstimatorPredictor:
    """The model at ``path`` (a folder written by ``ImageClassifier.save``, or an ONNX
    export for ``runtime="onnx"``), ready to serve, predicting with test-time
    augmentation ``tta`` (None: the model's default)."""
    if runtime == "torch":
        from headstart.estimator import ImageClassifier

        model: Any = ImageClassifier.load(path)
    elif runtime == "onnx":  # without onnxruntime, OnnxClassifier.load says what to install
        from headstart.export.runtime import OnnxClassifier

        model = OnnxClassifier.load(path)
    else:
        model = None
    if model is not None:
        return EstimatorPredictor(model, runtime=runtime, source=str(path), tta=tta)
    raise ConfigError(
        f"Unknown runtime {runtime!r}.", hint=f"{{runtime}} must be one of {', '.join(RUNTIMES)}."
    )
