"""Shared pieces of the server tests: image bytes and a model that waits when told."""

from __future__ import annotations

import threading
from io import BytesIO

import numpy as np
from PIL import Image

from headstart.data.decode import DecodeOptions

CHANNELS = {"red": 0, "green": 1, "blue": 2}


def colour_png(name: str, size: int = 24, seed: int = 1) -> bytes:
    """A PNG like colour_folder's images of class ``name`` (bright in its channel)."""
    pixels = np.random.default_rng(seed).integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    pixels[:, :, CHANNELS[name]] += 150
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class GatedModel:
    """A predictor whose forward pass waits for ``release``: lets a test hold the worker
    busy and fill the queue deterministically, with no sleeps."""

    classes = ["a", "b"]
    decode_options = DecodeOptions()

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batch_sizes: list[int] = []

    def predict_proba(self, images):  # noqa: ANN001, ANN201
        self.entered.set()
        assert self.release.wait(30), "the test never released the model"
        self.batch_sizes.append(len(images))
        return np.tile(np.array([[0.25, 0.75]], np.float32), (len(images), 1))

    def describe(self) -> dict:
        return {"classes": self.classes, "backbone": "gated", "runtime": "test"}
