"""A linear head trained to convergence on cached features (a "linear probe").

On a few thousand cached feature vectors a full-batch L-BFGS solve of an
L2-regularised softmax regression converges in a second or two on a CPU and
needs no learning-rate tuning: the right tool for the head of feature
extraction and for the LP stage of LP-FT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from headstart._internal.validation import check_finite, check_int

__all__ = ["LinearProbe", "fit_linear_probe", "stratified_folds"]


@dataclass
class LinearProbe:
    """Standardisation plus a linear layer; ``head`` works on raw features."""

    head: nn.Linear  # raw features -> logits (standardisation folded in)
    train_loss: float
    iterations: int
    bias_shift: torch.Tensor | None = None  # what prior_shift took off head.bias; None: nothing

    @property
    def fitted_head(self) -> nn.Linear:
        """``head`` as the solver left it, before the prior shift: the optimum itself, so
        the start a warm ``fit_linear_probe(init=...)`` needs."""
        if self.bias_shift is None:
            return self.head
        fitted = nn.Linear(self.head.in_features, self.head.out_features)
        with torch.no_grad():
            fitted.weight.copy_(self.head.weight)
            fitted.bias.copy_(self.head.bias + self.bias_shift)
        return fitted

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.head(torch.as_tensor(features, dtype=torch.float32))
            return torch.softmax(logits, dim=1).numpy()

    def score(self, features: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict_proba(features).argmax(1) == labels).mean())


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    l2: float = 1e-3,
    max_iter: int = 300,
    class_weights: np.ndarray | None = None,
    prior_shift: float = 0.0,
    seed: int = 0,
    init: LinearProbe | nn.Linear | None = None,
) -> LinearProbe:
    """Fit softmax regression on standardised features with full-batch L-BFGS.

    ``init``: a probe, or a head on raw features of the same shape as the solver leaves
    it (``LinearProbe.fitted_head``: before any prior shift), to start from instead of a
    small random one. The optimum is the same (the loss is convex, and the prior shift
    is applied after the solve, never to the start), a start near it needs fewer
    iterations. A probe's own shift is taken back off its head first, so a shifted
    probe is not a start off the optimum by its shift.

    ``prior_shift``: subtract that multiple of each class's log share of ``labels`` from
    its bias (logit adjustment, Menon et al. 2021). On features where the classes are
    nearly separable, loss weights barely move a converged probe's boundary; the shift
    moves it toward the rare classes (docs/BENCHMARKS.md, "Imbalance")."""
    check_finite("fit_linear_probe", "l2", l2, low=0)
    check_int("fit_linear_probe", "max_iter", max_iter)
    check_finite("fit_linear_probe", "prior_shift", prior_shift, low=0)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std  # (N, D) standardised

    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=generator)
        layer.bias.zero_()
        if isinstance(init, LinearProbe):
            init = init.fitted_head
        if init is not None:  # the raw-feature head in standardised coordinates
            layer.weight.copy_(init.weight * std)
            layer.bias.copy_(init.bias + (init.weight * mean).sum(1))
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    optimizer = torch.optim.LBFGS(
        layer.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
        line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9,
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(z), y, weight=weight)
        loss = loss + 0.5 * l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    iterations = int(optimizer.state[optimizer._params[0]].get("n_iter", max_iter))
    with torch.no_grad():
        final_loss = float(F.cross_entropy(layer(z), y, weight=weight))

    # Fold the standardisation into the layer so the head takes raw features.
    head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(layer.weight / std)
        head.bias.copy_(layer.bias - (layer.weight * (mean / std)).sum(1))
        shift = None
        if prior_shift:
            counts = torch.bincount(y, minlength=num_classes).clamp_min(1).float()
            shift = prior_shift * torch.log(counts / counts.sum())
            head.bias.sub_(shift)
    return LinearProbe(head=head, train_loss=final_loss, iterations=iterations, bias_shift=shift)


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray | None:
    """Each image's fold (0..folds-1, fewer folds when a class has fewer images): every
    class dealt round-robin over the folds in a seeded order. None when some class has a
    single image, so no fold can hold one out and still train on it."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    folds = min(folds, int(counts.min()))
    if folds < 2:
        return None
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for k in classes:
        members = rng.permutation(np.flatnonzero(labels == k))
        fold_of[members] = np.arange(len(members)) % folds
    return fold_of
