"""Label spreading: labels travel from labelled to unlabelled images through nearest neighbours.

Users often have far more images than labels: a clinic's archive, a shop's
catalogue. With frozen features cached for all of them, the unlabelled images
can still help. Images close in feature space tend to share a class, so the
labels are spread over a k-nearest-neighbour graph of the features (Zhou et
al., 2004, "Learning with local and global consistency"; Iscen et al., 2019,
"Label propagation for deep semi-supervised learning"), and the linear head is
then trained on the labelled images plus the unlabelled ones with their spread
labels. A linear head cannot follow the curved clusters the graph follows;
that is where the gain comes from.

The graph is built on standardised features reduced by PCA and L2-normalised
(cosine similarity), in chunks so memory stays at ``chunk x N`` floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from headstart._internal.validation import invalid

__all__ = ["Propagation", "label_spreading"]

NEIGHBOURS = 10  # edges per image in the k-nearest-neighbour graph
ALPHA = 0.99  # how far labels travel (0: not at all; near 1: along the whole graph)
ITERATIONS = 30
PCA_DIMS = 128
SIMILARITY_POWER = 3  # sharpens edge weights toward the closest neighbours


@dataclass
class Propagation:
    """Spread labels for the unlabelled images, and how sure the graph is of each."""

    labels: np.ndarray  # (U,) class index per unlabelled image
    confidence: np.ndarray  # (U,) in [0, 1]: 1 - normalised entropy of the spread scores;
    # 0 where no label reached the image
    reached: np.ndarray  # (U,) bool: False for images no label reached (labels[i] is then 0)


def _knn(points: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and cosine similarities of each row's k nearest other rows."""
    n = len(points)
    index = torch.empty(n, k, dtype=torch.long)
    similarity = torch.empty(n, k)
    for start in range(0, n, chunk):
        block = points[start : start + chunk] @ points.T
        rows = torch.arange(block.shape[0])
        block[rows, rows + start] = -float("inf")  # never your own neighbour
        values, found = block.topk(k, dim=1)
        index[start : start + chunk] = found
        similarity[start : start + chunk] = values
    return index, similarity


def label_spreading(
    labelled: np.ndarray,
    labels: np.ndarray,
    unlabelled: np.ndarray,
    num_classes: int,
    *,
    neighbours: int = NEIGHBOURS,
    alpha: float = ALPHA,
    iterations: int = ITERATIONS,
    pca_dims: int = PCA_DIMS,
    chunk: int = 2048,
    seed: int = 0,
) -> Propagation:
    """Spread ``labels`` of the ``labelled`` feature rows to the ``unlabelled`` rows."""
    owner = "label_spreading"
    for name, value, low in (
        ("num_classes", num_classes, 2),
        ("neighbours", neighbours, 1),
        ("iterations", iterations, 1),
        ("pca_dims", pca_dims, 1),
        ("chunk", chunk, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise invalid(owner, name, f"an int >= {low}", value)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise invalid(owner, "alpha", "a number in (0, 1)", alpha)
    labelled = np.asarray(labelled, dtype=np.float32)
    unlabelled = np.asarray(unlabelled, dtype=np.float32)
    labels = np.asarray(labels)
    if labelled.ndim != 2 or len(labelled) == 0:
        raise invalid(owner, "labelled", "a non-empty 2-D array (rows, features)", labelled.shape)
    if unlabelled.ndim != 2 or unlabelled.shape[1] != labelled.shape[1] or not len(unlabelled):
        raise invalid(
            owner, "unlabelled", f"a non-empty array of rows of {labelled.shape[1]} features",
            unlabelled.shape,
        )  # fmt: skip
    if labels.shape != (len(labelled),) or not np.issubdtype(labels.dtype, np.integer):
        raise invalid(owner, "labels", f"{len(labelled)} int labels", labels.shape)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise invalid(owner, "labels", f"ints in 0..{num_classes - 1}", sorted(set(labels)))
    for name, array in (("labelled", labelled), ("unlabelled", unlabelled)):
        if not np.isfinite(array).all():
            raise invalid(owner, name, "finite features", "NaN or inf")
    total = len(labelled) + len(unlabelled)
    if neighbours >= total:
        raise invalid(owner, "neighbours", f"an int in 1..{total - 1}", neighbours)

    x = torch.from_numpy(np.concatenate([labelled, unlabelled]))
    scale_ = x.std(0, unbiased=False).clamp_min(1e-6)
    x.sub_(x.mean(0)).div_(scale_)  # standardised in place: one copy of the features
    dims = min(pca_dims, x.shape[0], x.shape[1])
    if dims < x.shape[1]:
        with torch.random.fork_rng():  # pca_lowrank is randomised; the caller's RNG stays
            torch.manual_seed(seed)
            _, _, components = torch.pca_lowrank(x, q=dims, center=False)
        x = x @ components
    points = F.normalize(x, dim=1)
    index, similarity = _knn(points, neighbours, chunk)

    rows = torch.arange(total).repeat_interleave(neighbours)
    weights = similarity.clamp_min(0).flatten() ** SIMILARITY_POWER
    edges = torch.stack([rows, index.flatten()])
    graph = torch.sparse_coo_tensor(edges, weights, (total, total), check_invariants=False)
    graph = (graph + graph.t()).coalesce()  # symmetric: a neighbour of mine, or I of theirs
    degree = torch.sparse.sum(graph, dim=1).to_dense().clamp_min(1e-12)
    scale = degree.rsqrt()
    ij = graph.indices()
    values = graph.values() * scale[ij[0]] * scale[ij[1]]
    normalised = torch.sparse_coo_tensor(ij, values, graph.shape, check_invariants=False)

    seeds = torch.zeros(total, num_classes)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
    # Each class starts with the same total mass, so a class with more labels
    # does not flood the graph.
    seeds[torch.arange(len(labels)), torch.from_numpy(labels).long()] = torch.from_numpy(
        1.0 / np.maximum(counts[labels], 1.0)
    )
    scores = seeds.clone()
    for _ in range(iterations):
        scores = alpha * torch.sparse.mm(normalised, scores) + (1 - alpha) * seeds
    spread = scores[len(labelled) :].clamp_min(0).double()
    mass = spread.sum(1, keepdim=True)
    reached = mass.squeeze(1) > 0  # an island of the graph that no label reached: False
    probabilities = torch.where(mass > 0, spread / mass.clamp_min(1e-300), 1.0 / num_classes)
    entropy = -(probabilities * probabilities.clamp_min(1e-300).log()).sum(1)
    confidence = (1 - entropy / np.log(num_classes)).clamp(0, 1) * reached
    return Propagation(
        labels=spread.argmax(1).numpy(),
        confidence=confidence.float().numpy(),
        reached=reached.numpy(),
    )
