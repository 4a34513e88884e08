"""LogME: how well features will transfer, from the features and labels alone.

Kaichao You, Yong Liu, Jianmin Wang, Mingsheng Long. *LogME: Practical Assessment of
Pre-trained Models for Transfer Learning.* ICML 2021, arXiv:2102.11005.

For each class, the one-hot target ``y`` is modelled as a Bayesian linear regression on
the features ``F`` (N x D): ``y = F w + e``, with prior ``w ~ N(0, 1/alpha I)`` and noise
``e ~ N(0, 1/beta I)``. The evidence ``p(y | F, alpha, beta)`` is maximised over
``alpha`` and ``beta`` by MacKay's fixed-point updates, and LogME is the maximum log
evidence divided by N, averaged over the classes. Higher is better; it needs one SVD of
F and no training, so every candidate is scored in milliseconds to seconds.

The equations (Bishop, *Pattern Recognition and Machine Learning*, 3.86-3.95), with
``F = U diag(sigma) V^T`` and ``A = alpha I + beta F^T F``:

    m       = beta A^-1 F^T y
    gamma   = sum_i beta sigma_i^2 / (alpha + beta sigma_i^2)
    alpha   = gamma / (m^T m)
    beta    = (N - gamma) / ||y - F m||^2
    log ev. = D/2 log alpha + N/2 log beta - beta/2 ||y - F m||^2 - alpha/2 m^T m
              - 1/2 log|A| - N/2 log 2 pi
"""

from __future__ import annotations

import numpy as np

from headstart._internal.validation import invalid
from headstart.errors import DataError

__all__ = ["log_evidence", "logme"]

_MAX_STEPS = 100
_TOLERANCE = 1e-4  # relative change of alpha / beta between two steps
_EPS = 1e-12


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """The LogME score of ``features`` (N x D) for integer ``labels`` (N,)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise invalid("logme", "features", "an (N, D) array with one row per label",
                      getattr(features, "shape", features))  # fmt: skip
    if not np.isfinite(features).all():
        raise DataError("LogME: the features hold NaN or infinity.")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise DataError(
            f"LogME needs at least 2 classes to tell apart; the labels hold {len(classes)}."
        )
    u, sigma, _ = np.linalg.svd(features, full_matrices=False)
    total = 0.0
    for k in classes:
        y = (labels == k).astype(np.float64)
        total += _max_evidence(u, sigma**2, y, features.shape[1]) / len(y)
    return total / len(classes)


def log_evidence(
    features: np.ndarray, y: np.ndarray, alpha: float, beta: float
) -> float:  # fmt: skip
    """The log evidence of targets ``y`` at given ``alpha`` and ``beta`` (the formula
    above, from an SVD); ``logme`` maximises it over both."""
    features = np.asarray(features, dtype=np.float64)
    u, sigma, _ = np.linalg.svd(features, full_matrices=False)
    return _evidence(u, sigma**2, np.asarray(y, np.float64), features.shape[1], alpha, beta)


def _parts(
    u: np.ndarray, s: np.ndarray, y: np.ndarray, alpha: float, beta: float
) -> tuple[float, float, float]:
    """(m^T m, ||y - F m||^2, gamma) in the SVD basis: with ``z = U^T y``, the posterior
    mean's coordinates are ``beta sigma z / (alpha + beta s)``; the part of ``y``
    outside F's column space is residual whatever ``m`` is."""
    z = u.T @ y
    shrink = alpha / (alpha + beta * s)  # 1 - beta s / (alpha + beta s)
    m_norm = float(np.sum(beta**2 * s * z**2 / (alpha + beta * s) ** 2))
    outside = max(float(y @ y - z @ z), 0.0)
    residual = float(np.sum((shrink * z) ** 2)) + outside
    gamma = float(np.sum(beta * s / (alpha + beta * s)))
    return m_norm, residual, gamma


def _evidence(
    u: np.ndarray, s: np.ndarray, y: np.ndarray, dim: int, alpha: float, beta: float
) -> float:
    n = len(y)
    m_norm, residual, _ = _parts(u, s, y, alpha, beta)
    # log|A|: the SVD's directions, plus alpha alone along the D - rank others.
    log_det = float(np.sum(np.log(alpha + beta * s))) + (dim - len(s)) * np.log(alpha)
    return (
        dim / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - beta / 2 * residual
        - alpha / 2 * m_norm
        - log_det / 2
        - n / 2 * np.log(2 * np.pi)
    )


def _max_evidence(u: np.ndarray, s: np.ndarray, y: np.ndarray, dim: int) -> float:
    alpha, beta = 1.0, 1.0
    n = len(y)
    for _ in range(_MAX_STEPS):
        m_norm, residual, gamma = _parts(u, s, y, alpha, beta)
        new_alpha = gamma / max(m_norm, _EPS)
        new_beta = max(n - gamma, _EPS) / max(residual, _EPS)
        done = (
            abs(new_alpha - alpha) <= _TOLERANCE * alpha
            and abs(new_beta - beta) <= _TOLERANCE * beta
        )
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return _evidence(u, s, y, dim, alpha, beta)
