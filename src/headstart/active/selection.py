"""Which pool images to label next, from features alone (no images, no backbone).

Warm start (a probe or a model gives class probabilities for the pool): each pool image
scores by its *uncertainty* (one minus the margin between its two likeliest classes),
raised for images predicted in a class with few labels (*coverage*) and, a little, for
images far from every labelled one (*novelty*). A batch is then drawn for *diversity*
(as Cluster-Margin does, Citovsky et al. 2021): the best-scoring candidates, several
times the batch, are clustered into one group per pick, and each group gives its
best-scoring image, so a batch of 20 does not hold 20 near-copies of one confusion.

Cold start (no labels, or too few to trust a probe): k-means on the pool, one image per
group (the one nearest its centre, a typical image, not an outlier), largest groups
first, groups that already hold a labelled image last.

Everything here is seeded and runs in a second on 10,000 pool images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Pick", "cold_start_batch", "kmeans", "normalised", "uncertain_batch"]

# How many best-scoring candidates the diverse batch is clustered from, per pick.
CANDIDATES_PER_PICK = 10
# A class with fewer labels than the median class weighs its images up to this factor.
MAX_COVERAGE_WEIGHT = 2.0
# Novelty moves a score by at most this fraction either way (uncertainty leads).
NOVELTY_WEIGHT = 0.2


@dataclass(frozen=True)
class Pick:
    """One chosen pool row and why: ``kind`` is "uncertain", "few labels", "far" or
    "representative"; ``label``/``runner_up`` are class indices (None when unknown)."""

    index: int
    kind: str
    score: float
    label: int | None = None
    probability: float | None = None
    runner_up: int | None = None
    group_size: int | None = None  # cold start: pool images the pick stands for


def normalised(features: np.ndarray, reference: np.ndarray | None = None) -> torch.Tensor:
    """Rows standardised (by ``reference``'s mean and spread, default their own) and
    scaled to unit length: distances between them are cosine distances."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    ref = x if reference is None else torch.as_tensor(np.asarray(reference), dtype=torch.float32)
    mean, std = ref.mean(0), ref.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def kmeans(
    x: torch.Tensor, k: int, seed: int, iterations: int = 20, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (k, D), each row's group (N,)): k-means++ seeding from a seeded generator,
    then Lloyd's steps; ``weights`` pull centres toward heavier rows."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    squared = (x * x).sum(1)
    chosen = [int(rng.integers(n))]
    nearest = _distances(x, squared, x[chosen]).squeeze(1)
    for _ in range(1, k):
        total = float(nearest.sum())
        if total <= 0:  # every row sits on a centre already: take unused rows in order
            unused = np.setdiff1d(np.arange(n), chosen)
            chosen.append(int(unused[0]))
        else:
            p = (nearest / total).double().numpy()
            chosen.append(int(rng.choice(n, p=p / p.sum())))
        nearest = torch.minimum(nearest, _distances(x, squared, x[chosen[-1:]]).squeeze(1))
    centres = x[chosen].clone()
    w = torch.ones(n) if weights is None else weights.float()
    group = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        group = _distances(x, squared, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, group, x * w[:, None])
        mass = torch.zeros(len(centres)).index_add_(0, group, w)
        filled = mass > 0  # an emptied group keeps its centre
        moved = sums[filled] / mass[filled, None]
        if torch.allclose(moved, centres[filled], atol=1e-6):
            break
        centres[filled] = moved
    return centres, _distances(x, squared, centres).argmin(1)


def _distances(x: torch.Tensor, squared: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (N, C), never below 0."""
    cross = x @ centres.T
    return (squared[:, None] - 2 * cross + (centres * centres).sum(1)[None, :]).clamp_min(0)


def uncertain_batch(
    labelled: torch.Tensor,
    labels: np.ndarray,
    pool: torch.Tensor,
    proba: np.ndarray,
    n: int,
    seed: int,
    *,
    diverse: bool = True,
) -> list[Pick]:
    """``n`` pool rows (or fewer, when the pool is smaller) to label next, best first.

    ``labelled``/``pool``: `normalised` features (``labelled`` may have no rows, when a
    model's labelled images are unknown); ``labels``: the labelled rows' classes;
    ``proba``: the pool's class probabilities (N, classes). ``diverse=False`` takes the
    top scores as they come (what the diverse batch is measured against).
    """
    proba = np.asarray(proba, dtype=np.float64)
    order = np.argsort(-proba, axis=1, kind="stable")
    best, second = order[:, 0], order[:, 1] if proba.shape[1] > 1 else order[:, 0]
    rows = np.arange(len(proba))
    uncertainty = 1.0 - (proba[rows, best] - proba[rows, second])
    weight = coverage_weights(labels, proba.shape[1])[best]
    novelty = _novelty(labelled, pool)
    score = uncertainty * weight * (1 - NOVELTY_WEIGHT / 2 + NOVELTY_WEIGHT * novelty)
    ranked = np.lexsort((rows, -score))  # ties by row: the same on every run
    if diverse and n > 1 and len(ranked) > n:
        picked = _diverse(pool, score, ranked[: CANDIDATES_PER_PICK * n], n, seed)
    else:
        picked = ranked[:n]
    out = []
    for i in picked:
        kind = "uncertain"
        if weight[i] > 1.25:
            kind = "few labels"
        elif uncertainty[i] < 0.5 and novelty[i] > 0.8:
            kind = "far"
        out.append(
            Pick(
                index=int(i),
                kind=kind,
                score=float(score[i]),
                label=int(best[i]),
                probability=float(proba[i, best[i]]),
                runner_up=int(second[i]),
            )
        )
    return out


def coverage_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """Per class: sqrt(median count / count), between 1 and MAX_COVERAGE_WEIGHT (1 for all
    when no labels are known)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes).astype(float)
    if not counts.sum():
        return np.ones(classes)
    median = float(np.median(counts))
    return np.clip(np.sqrt(median / np.maximum(counts, 0.5)), 1.0, MAX_COVERAGE_WEIGHT)


def _novelty(labelled: torch.Tensor, pool: torch.Tensor) -> np.ndarray:
    """Each pool row's distance to its nearest labelled row, as a rank in [0, 1] within
    the pool (0.5 for all when no labelled rows are known)."""
    if not len(labelled):
        return np.full(len(pool), 0.5)
    nearest = np.concatenate(
        [(1 - (pool[s : s + 4096] @ labelled.T).max(1).values).numpy()
         for s in range(0, len(pool), 4096)]
    )  # fmt: skip
    ranks = np.empty(len(nearest))
    ranks[np.argsort(nearest, kind="stable")] = np.arange(len(nearest))
    return ranks / max(len(nearest) - 1, 1)


def _diverse(
    pool: torch.Tensor, score: np.ndarray, candidates: np.ndarray, n: int, seed: int
) -> list[int]:
    """One row per k-means group of ``candidates`` (its best score), best groups first; a
    group left empty gives its place to the best candidate not yet picked."""
    _, group = kmeans(pool[candidates], n, seed, weights=torch.as_tensor(score[candidates]))
    group = group.numpy()
    picked: list[int] = []
    for g in np.unique(group):
        members = candidates[group == g]
        picked.append(int(members[np.lexsort((members, -score[members]))[0]]))
    for i in candidates:  # fewer groups than picks (duplicates in the pool)
        if len(picked) >= n:
            break
        if int(i) not in picked:
            picked.append(int(i))
    picked.sort(key=lambda i: (-score[i], i))
    return picked[:n]


def cold_start_batch(
    pool: torch.Tensor,
    n: int,
    seed: int,
    labelled: torch.Tensor | None = None,
    labels: np.ndarray | None = None,
) -> list[Pick]:
    """``n`` typical pool rows of distinct groups, largest groups first; groups that hold
    a labelled row (when ``labelled`` is given) go last, and the others count as "far"."""
    n = min(n, len(pool))
    if n <= 0:
        return []
    centres, group = kmeans(pool, n, seed)
    group = group.numpy()
    covered = np.zeros(len(centres), dtype=bool)
    nearest_label = np.full(len(centres), -1)
    if labelled is not None and len(labelled):
        squared = (pool * pool).sum(1)
        cut = np.array(
            [float(_distances(pool[group == g], squared[group == g], centres[g : g + 1]).max())
             if (group == g).any() else 0.0 for g in range(len(centres))]
        )  # fmt: skip
        to_labelled = _distances(labelled, (labelled * labelled).sum(1), centres).numpy()
        covered = to_labelled.min(0) <= cut
        if labels is not None:
            nearest_label = np.asarray(labels)[to_labelled.argmin(0)]
    sizes = np.bincount(group, minlength=len(centres))
    picks = []
    for g in sorted(range(len(centres)), key=lambda g: (covered[g], -sizes[g], g)):
        members = np.flatnonzero(group == g)
        if not len(members):
            continue
        d = ((pool[members] - centres[g]) ** 2).sum(1).numpy()
        index = int(members[np.lexsort((members, d))[0]])
        far = labelled is not None and len(labelled) and not covered[g]
        picks.append(
            Pick(
                index=index,
                kind="far" if far else "representative",
                score=float(sizes[g]) / len(pool),
                label=int(nearest_label[g]) if nearest_label[g] >= 0 else None,
                group_size=int(sizes[g]),
            )
        )
    taken = {p.index for p in picks}
    for i in range(len(pool)):  # fewer groups than picks (duplicate images)
        if len(picks) >= n:
            break
        if i not in taken:
            picks.append(Pick(index=i, kind="representative", score=0.0, group_size=1))
    return picks[:n]
