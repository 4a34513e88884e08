"""Cheap estimates of how well features will do, from labelled training features only:
a cross-validated linear probe (the head feature extraction would train) and
leave-one-out kNN accuracy. LogME is in ``logme``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from headstart.train.probe import fit_linear_probe, stratified_folds

__all__ = ["knn_accuracy", "probe_accuracy"]


def probe_accuracy(
    features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0
) -> float | None:
    """Mean held-out accuracy of the linear probe over stratified ``folds`` (fewer when
    a class has fewer images); None when a class has a single image."""
    accuracy, _ = cross_validated_probe(features, labels, folds=folds, seed=seed)
    return accuracy


def cross_validated_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    init: Sequence[nn.Linear | None] | None = None,
) -> tuple[float | None, list[nn.Linear]]:
    """``probe_accuracy`` and each fold's fitted head (on raw features), so a wider
    layer set of the same images can start its folds from them: ``init`` holds one
    head (or None) per fold, already laid out for ``features``' columns."""
    labels = np.asarray(labels)
    fold_of = stratified_folds(labels, folds, seed)
    if fold_of is None:
        return None, []
    classes = np.unique(labels)
    folds = int(fold_of.max()) + 1
    index = {k: i for i, k in enumerate(classes)}
    y = np.array([index[k] for k in labels])
    correct, heads = 0, []
    for fold in range(folds):
        held = fold_of == fold
        start = init[fold] if init is not None and fold < len(init) else None
        probe = fit_linear_probe(
            features[~held], y[~held], len(classes), seed=seed, init=start
        )  # fmt: skip
        heads.append(probe.fitted_head)  # the optimum, a wider set's start
        correct += int((probe.predict_proba(features[held]).argmax(1) == y[held]).sum())
    return correct / len(labels), heads


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = 5) -> float:
    """Leave-one-out accuracy of a cosine kNN (majority of the ``k`` nearest, ties to
    the nearer) on standardised features."""
    labels = np.asarray(labels)
    x = np.asarray(features, dtype=np.float32)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = max(1, min(k, len(x) - 1))
    correct = 0
    for start in range(0, len(x), 1024):  # a 1024 x N block of similarities at a time
        sims = x[start : start + 1024] @ x.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf  # not itself
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        for i, idx in enumerate(nearest):
            votes: dict[int, float] = {}
            for rank, j in enumerate(idx):  # ties go to the class with the nearer vote
                votes[labels[j]] = votes.get(labels[j], 0) + 1 - rank * 1e-6
            correct += int(max(votes, key=votes.get) == labels[start + i])
    return correct / len(x)
