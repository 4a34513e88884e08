"""The one-call helper over ``ImageClassifier``, as rich's ``track`` is over ``Progress``:
``clf, metrics = headstart.fit_folder("photos/", "fine-tune")``."""

from __future__ import annotations

import os
from typing import Any

from headstart.backbones import DEFAULT_BACKBONE
from headstart.data.layout import load_images
from headstart.estimator.image_classifier import ImageClassifier
from headstart.train.config import TrainConfig

__all__ = ["fit_folder"]


def fit_folder(
    path: str | os.PathLike[str],
    strategy: str = "feature-extraction",
    *,
    backbone: str = DEFAULT_BACKBONE,
    config: TrainConfig | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[ImageClassifier, dict[str, Any]]:
    """The one-call helper: load a folder, split it, fit, and evaluate on the held-out part.

    Returns the fitted classifier and its test metrics. ``kwargs`` go to
    ``ImageClassifier`` (``weights``, ``cache_dir``, ``checkpoint_dir``, ``callback``).
    """
    train, test = load_images(path, test_size=test_size, seed=seed)
    clf = ImageClassifier(backbone, strategy, config, **kwargs).fit(train)
    used = clf.config_
    metrics = clf.evaluate(test, batch_size=used.batch_size, device=used.device)
    clf.metrics_ = {"test": {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "n")}}
    return clf, metrics
