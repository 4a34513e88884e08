"""The parity gate: an exported file must give the PyTorch model's answers.

Both sides run on the same real images, each through its own whole path: PyTorch
decodes and transforms with timm's evaluation transform and runs the fitted network in
fp32; ONNX Runtime gets ``Preprocessing.resize_crop``'s uint8 pixels and runs the
file. So the gate checks the graph, the BatchNorm fold, the normalisation inside the
graph and the Pillow preprocessing outside it, all at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from headstart.data.dataset import ImageDataset
from headstart.errors import DataError
from headstart.estimator.results import labels_in_model_order
from headstart.estimator.tta import average_views, tta_views, view_count
from headstart.export.contract import INPUT_NAME, image_pixels

__all__ = [
    "MAX_PROBABILITY_GAP",
    "MIN_TOP1_AGREEMENT",
    "ParityReport",
    "compare_probabilities",
    "onnx_probabilities",
    "torch_probabilities",
]

MAX_PROBABILITY_GAP = 1e-4  # max |p_onnx - p_torch| over every image and class, fp32
MIN_TOP1_AGREEMENT = 0.999  # share of images whose most probable class is the same


@dataclass(frozen=True)
class ParityReport:
    """How an exported file's answers compare with the reference's on ``images``."""

    images: int
    source: str  # which images, in words
    max_probability_gap: float
    top1_agreement: float
    reference_accuracy: float | None  # None when the images' labels are not the model's
    accuracy: float | None
    near_ties: int = 0  # images whose top two classes are within 2 x the gap limit in
    # the reference: a flip there is rounding, not a wrong graph, and is not counted

    def passed(self, max_gap: float, min_agreement: float) -> bool:
        return self.max_probability_gap <= max_gap and self.top1_agreement >= min_agreement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def torch_probabilities(model: torch.nn.Module, preprocessing: Any, images: ImageDataset,
                        batch_size: int = 32, *, tta: str = "none") -> np.ndarray:  # fmt: skip
    """The fitted network's probabilities in fp32 on the CPU, images transformed by
    timm's evaluation transform: the reference an export must match. With test-time
    augmentation (``tta``), the mean over each image's views (``estimator.tta``), each
    view as a tensor by torchvision's ToTensor and Normalize."""
    transform = preprocessing.transform()
    if tta != "none":
        from torchvision import transforms

        finish = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(preprocessing.mean, preprocessing.std)]
        )
    model = model.cpu().eval()
    views = view_count(tta, preprocessing)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            if tta == "none":
                batch = torch.stack([transform(images.image(i)) for i in range(start, stop)])
            else:
                shown = [images.image(i) for i in range(start, stop)]
                views_ = [v for image in shown for v in tta_views(image, preprocessing, tta)]
                batch = torch.stack([finish(view) for view in views_])
            proba = torch.softmax(model(batch).float(), dim=1).numpy()
            chunks.append(average_views(proba, views))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def onnx_probabilities(session: Any, preprocessing: Any, images: ImageDataset,
                       batch_size: int = 32, *, tta: str = "none") -> np.ndarray:  # fmt: skip
    """An ONNX Runtime session's probabilities, images as ``resize_crop``'s pixels (with
    ``tta``: the mean over each image's views, as uint8 pixels)."""
    views = view_count(tta, preprocessing)
    chunks = []
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        if tta == "none":
            rows = [image_pixels(images.image(i), preprocessing) for i in range(start, stop)]
        else:
            rows = [np.asarray(view, dtype=np.uint8) for i in range(start, stop)
                    for view in tta_views(images.image(i), preprocessing, tta)]  # fmt: skip
        proba = session.run(["probabilities"], {INPUT_NAME: np.stack(rows)})[0]
        chunks.append(average_views(proba, views))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def compare_probabilities(
    reference: np.ndarray, got: np.ndarray, images: ImageDataset, classes: list[str], source: str
) -> ParityReport:
    """Max |Δp|, top-1 agreement and, when the images' classes are among the model's,
    the accuracy of both."""
    if reference.shape != got.shape:
        raise DataError(f"Exported model gives shape {got.shape}, expected {reference.shape}.")
    truth = _truth(images, classes)
    ordered = np.sort(reference, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if reference.shape[1] > 1 else ordered[:, -1]
    tie = margin <= 2 * MAX_PROBABILITY_GAP
    same = (reference.argmax(1) == got.argmax(1)) | tie
    accuracy = None if truth is None else float((got.argmax(1) == truth).mean())
    reference_accuracy = None if truth is None else float((reference.argmax(1) == truth).mean())
    return ParityReport(
        images=len(images),
        source=source,
        max_probability_gap=float(np.abs(reference - got).max()) if got.size else 0.0,
        top1_agreement=float(same.mean()) if got.size else 1.0,
        reference_accuracy=reference_accuracy,
        accuracy=accuracy,
        near_ties=int(tie.sum()),
    )


def _truth(images: ImageDataset, classes: list[str]) -> np.ndarray | None:
    if not images.classes or not set(images.classes) <= set(classes):
        return None
    try:
        return labels_in_model_order(images, classes)
    except DataError:
        return None
