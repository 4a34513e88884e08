"""Which labels look wrong: confident learning on out-of-fold probabilities of a linear
probe over the frozen backbone's (cached) features, and near-duplicates by cosine
similarity of the same features.

Confident learning (Northcutt, Jiang and Chuang, JAIR 2021): each class j gets a
threshold t_j, the mean probability the held-out probe gives class j over the images
labelled j (its "self-confidence"). An image labelled i counts in the confident joint
C[i, j] when its probability of j reaches t_j (of several such j, the likeliest). C,
calibrated to the label counts, estimates how many images labelled i truly are j; of the
images labelled i, the C[i, j] with the largest margin p_j - p_i are flagged ("prune by
noise rate"), and an image whose likeliest class is its own label never is. The
flagged images are ranked by self-confidence (or normalised margin), worst first.

Every probability comes from a probe that never saw the image (k stratified folds), so
a wrong label cannot vouch for itself. The wrong labels it did see still pull the probe
their way, so a second pass scores every image again with probes trained without the
labels the first pass flagged, and confident learning runs on those probabilities
(measured in docs/BENCHMARKS.md). The probe is the one feature extraction trains
(``train.probe``), on the features feature extraction caches: once a folder's features
are cached, finding its label issues takes seconds.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headstart._internal.validation import (
    Constraints,
    Finite,
    Interval,
    Options,
    check_int,
    invalid,
    validate,
)
from headstart.backbones.registry import DEFAULT_BACKBONE
from headstart.data.dataset import ImageDataset
from headstart.errors import DataError
from headstart.evaluation.similarity import near_duplicates, neighbour_similarity
from headstart.train.probe import fit_linear_probe, stratified_folds

__all__ = [
    "LabelIssue",
    "LabelIssues",
    "NearDuplicate",
    "check_issue_settings",
    "confident_learning",
    "find_label_issues",
    "issues_from_features",
    "near_duplicates",
    "out_of_fold_probabilities",
]

MISLABELLED, AMBIGUOUS, OUTLIER = "mislabelled", "ambiguous", "outlier"
RANKINGS = ("self_confidence", "normalized_margin")

# The settings of find_label_issues, checked as data: the messages name the parameter.
ISSUE_CONSTRAINTS: Constraints = {
    "folds": Interval(int, 2, 20, closed="both"),
    "rank_by": Options(RANKINGS),
    "duplicate_similarity": (
        Finite(),
        Interval(numbers.Real, 0.5, 1.0, closed="both", finite=True),
    ),
    "outlier_similarity": (Finite(), Interval(numbers.Real, -1.0, 1.0, closed="both", finite=True)),
    "probe_l2": (Finite(), Interval(numbers.Real, 0.0, None, finite=True)),
    "passes": Interval(int, 1, 5, closed="both"),
}


DEFAULT_SETTINGS: dict[str, object] = {
    "folds": 5,
    "seed": 0,
    "rank_by": "self_confidence",
    "probe_l2": 0.1,
    "duplicate_similarity": 0.95,
    "outlier_similarity": 0.2,
    "passes": 2,
}


def check_issue_settings(settings: dict[str, object]) -> dict[str, object]:
    """``settings`` over the defaults, each checked (an unknown name is refused too):
    faces call this before reading any image."""
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise invalid(
            "find_label_issues", unknown[0], f"a setting among {sorted(DEFAULT_SETTINGS)}",
            settings[unknown[0]],
        )  # fmt: skip
    merged = {**DEFAULT_SETTINGS, **settings}
    validate("find_label_issues", ISSUE_CONSTRAINTS, merged)
    check_int("find_label_issues", "seed", merged["seed"], low=0)
    return merged


@dataclass(frozen=True)
class LabelIssue:
    """One image whose label looks wrong, or which looks like no class at all."""

    index: int  # row in the dataset
    path: str
    given: str
    suggested: str  # the likeliest class by the held-out probe (never an absent class)
    confidence: float  # the held-out probability of ``suggested``
    self_confidence: float  # the held-out probability of ``given``
    kind: str  # MISLABELLED, AMBIGUOUS or OUTLIER

    @property
    def reason(self) -> str:
        if self.kind == AMBIGUOUS:
            return f"ambiguous between {self.given} and {self.suggested}"
        if self.kind == OUTLIER:
            return "outlier far from every class"
        return "likely mislabelled"


@dataclass(frozen=True)
class NearDuplicate:
    """Two images whose features point the same way (cosine similarity of centred features)."""

    first: int
    second: int
    first_path: str
    second_path: str
    first_label: str
    second_label: str
    similarity: float
    exact: bool  # byte-identical files (the data doctor reports these too)


@dataclass
class LabelIssues:
    """What ``find_label_issues`` found: the issues ranked worst first, near-duplicate
    pairs, and the evidence (held-out probabilities, thresholds, the confident joint)."""

    issues: list[LabelIssue]
    near_duplicates: list[NearDuplicate]
    classes: list[str]
    labels: np.ndarray  # (N,) the given labels
    probabilities: np.ndarray  # (N, K) held out; columns of classes without images are 0
    first_probabilities: np.ndarray  # (N, K) the first pass's (every probe saw every label)
    thresholds: np.ndarray  # (K,) t_j; inf for a class without images
    confident_joint: np.ndarray  # (K, K) calibrated counts: given i, likely true j
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def label_issues(self) -> list[LabelIssue]:
        """The images confident learning flags (mislabelled or ambiguous), not outliers."""
        return [issue for issue in self.issues if issue.kind != OUTLIER]

    def flagged(self) -> np.ndarray:
        """(N,) bool: True where confident learning flags the label."""
        mask = np.zeros(len(self.labels), dtype=bool)
        mask[[issue.index for issue in self.label_issues]] = True
        return mask

    def summary(self) -> str:
        kinds = {
            kind: sum(i.kind == kind for i in self.issues) for kind in (MISLABELLED, AMBIGUOUS)
        }
        outliers = sum(i.kind == OUTLIER for i in self.issues)
        near = sum(not d.exact for d in self.near_duplicates)
        exact = len(self.near_duplicates) - near
        return (
            f"{len(self.label_issues)} label issue(s) in {len(self.labels)} images "
            f"({kinds[MISLABELLED]} likely mislabelled, {kinds[AMBIGUOUS]} ambiguous); "
            f"{outliers} outlier(s); {near} near-duplicate pair(s)"
            + (f" and {exact} exact duplicate pair(s)" if exact else "")
        )


# ---------------------------------------------------------------- the probabilities


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = 5,
    seed: int = 0,
    l2: float = 1e-3,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """(N, num_classes): each image's class probabilities from a linear probe trained on
    the other folds (stratified). Columns of classes without images stay 0, so no such
    class is ever the likeliest. ``exclude`` (N,) bool: images no probe trains on (they
    are still scored), except where a class would then have none to train on."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < 2:
        raise DataError(
            f"Finding label issues needs images of at least 2 classes; got {len(present)}."
        )
    fold_of = stratified_folds(labels, folds, seed)
    if fold_of is None:
        raise DataError(
            "Finding label issues holds images out to score them, so each class needs at "
            "least 2 images; some class has 1."
        )
    column = {k: i for i, k in enumerate(present)}
    y = np.array([column[k] for k in labels])
    skip = np.zeros(len(labels), dtype=bool) if exclude is None else np.asarray(exclude)
    probabilities = np.zeros((len(labels), num_classes), dtype=np.float64)
    for fold in range(int(fold_of.max()) + 1):
        held = fold_of == fold
        train = ~held & ~skip
        for k in range(len(present)):  # a class all excluded keeps its images
            if not (train & (y == k)).any():
                train |= ~held & (y == k)
        probe = fit_linear_probe(features[train], y[train], len(present), l2=l2, seed=seed)
        probabilities[np.ix_(held, present)] = probe.predict_proba(features[held])
    return probabilities


# ---------------------------------------------------------------- confident learning


def confident_learning(
    labels: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flagged (N,) bool, thresholds (K,), calibrated confident joint (K, K)) for the
    given ``labels`` and held-out ``probabilities`` (N, K). See the module's docstring."""
    labels = np.asarray(labels)
    p = np.asarray(probabilities, dtype=np.float64)
    n, k = p.shape
    counts = np.bincount(labels, minlength=k)
    thresholds = np.full(k, np.inf)
    for j in np.flatnonzero(counts):
        thresholds[j] = p[labels == j, j].mean()
    above = p >= thresholds - 1e-6  # (N, K) confidently class j
    confident = above.any(axis=1)
    # The one confident class; of several, the likeliest class outright.
    likely = np.where(above.sum(axis=1) > 1, p.argmax(axis=1), above.argmax(axis=1))
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[confident], likely[confident]), 1)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))  # one kept per class
    # Calibrate: rows sum to the label counts, the whole to N, rounded keeping row totals.
    rows = joint.sum(axis=1, keepdims=True)
    joint = np.where(rows > 0, joint / np.maximum(rows, 1e-12), 0) * counts[:, None]
    joint = _round_rows(joint * n / max(joint.sum(), 1e-12))
    flagged = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(counts):
        members = np.flatnonzero(labels == i)
        for j in range(k):
            take = int(joint[i, j]) if j != i else 0
            take = min(take, len(members) - 1)  # leave at least one image in the class
            if take > 0:
                margin = p[members, j] - p[members, i]
                flagged[members[np.argsort(-margin, kind="stable")[:take]]] = True
    own = p.copy()
    own[np.arange(n), labels] += 1e-6  # a tie goes to the given label
    flagged &= own.argmax(axis=1) != labels
    return flagged, thresholds, joint


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    """Round each row to ints keeping its (rounded) total: the entries rounded furthest
    from their value move by one until the row adds up."""
    out = matrix.round()
    for row in range(len(matrix)):
        diff = int(round(matrix[row].sum()) - out[row].sum())
        step = 1 if diff > 0 else -1
        # As cleanlab orders them (ties included), so both count the same joint.
        order = np.argsort(matrix[row] - out[row])[::-step][: abs(diff)]
        out[row, order] += step
    return out.astype(np.int64)


def _ranking_score(labels: np.ndarray, p: np.ndarray, rank_by: str) -> np.ndarray:
    """Label quality, low is worse: self-confidence p_given, or the normalised margin
    (p_given - max other p + 1) / 2."""
    own = p[np.arange(len(labels)), labels]
    if rank_by == "self_confidence":
        return own
    others = p.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return (own - others.max(axis=1) + 1) / 2


# ---------------------------------------------------------------- putting it together


def issues_from_features(
    dataset: ImageDataset,
    features: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    rank_by: str = "self_confidence",
    probe_l2: float = 0.1,
    duplicate_similarity: float = 0.95,
    outlier_similarity: float = 0.2,
    passes: int = 2,
) -> LabelIssues:
    """Label issues, outliers and near-duplicates of ``dataset`` from its ``features``
    (N, D): everything ``find_label_issues`` does after extraction."""
    check_issue_settings(
        {"folds": folds, "seed": seed, "rank_by": rank_by, "probe_l2": probe_l2,
         "duplicate_similarity": duplicate_similarity, "outlier_similarity": outlier_similarity,
         "passes": passes}
    )  # fmt: skip
    if len(features) != len(dataset):
        raise invalid("issues_from_features", "features", f"{len(dataset)} rows", len(features))
    labels = dataset.labels
    k = len(dataset.classes)
    first = out_of_fold_probabilities(features, labels, k, folds=folds, seed=seed, l2=probe_l2)
    p = first
    flagged, thresholds, joint = confident_learning(labels, p)
    for _ in range(passes - 1):  # again, with no probe trained on what was flagged
        p = out_of_fold_probabilities(
            features, labels, k, folds=folds, seed=seed, l2=probe_l2, exclude=flagged
        )
        flagged, thresholds, joint = confident_learning(labels, p)
    score = _ranking_score(labels, p, rank_by)
    closeness = neighbour_similarity(features)
    outlier = closeness < outlier_similarity
    issues = []
    for index in np.argsort(score, kind="stable"):
        if not (flagged[index] or outlier[index]):
            continue
        given = int(labels[index])
        others = p[index].copy()
        others[given] = -1.0
        suggested = int(others.argmax()) if flagged[index] else int(p[index].argmax())
        own, best = float(p[index, given]), float(p[index, suggested])
        kind = OUTLIER if outlier[index] else MISLABELLED
        if flagged[index] and not outlier[index] and own >= 0.5 * best:
            kind = AMBIGUOUS  # the given label keeps at least half the suggested one's odds
        issues.append(
            LabelIssue(
                index=int(index),
                path=dataset.source(int(index)),
                given=dataset.classes[given],
                suggested=dataset.classes[suggested],
                confidence=best,
                self_confidence=own,
                kind=kind,
            )  # fmt: skip
        )
    return LabelIssues(
        issues=issues,
        near_duplicates=_pairs(dataset, near_duplicates(features, duplicate_similarity)),
        classes=list(dataset.classes),
        labels=labels.copy(),
        probabilities=p,
        first_probabilities=first,
        thresholds=thresholds,
        confident_joint=joint,
        settings={
            "folds": folds,
            "seed": seed,
            "rank_by": rank_by,
            "probe_l2": probe_l2,
            "duplicate_similarity": duplicate_similarity,
            "outlier_similarity": outlier_similarity,
            "passes": passes,
        },  # fmt: skip
    )


def _pairs(dataset: ImageDataset, pairs: list[tuple[int, int, float]]) -> list[NearDuplicate]:
    hashes = dataset.content_hashes()
    names = dataset.classes
    return [
        NearDuplicate(
            first=i,
            second=j,
            first_path=dataset.source(i),
            second_path=dataset.source(j),
            first_label=names[dataset.labels[i]],
            second_label=names[dataset.labels[j]],
            similarity=similarity,
            exact=bool(hashes[i]) and hashes[i] == hashes[j],
        )  # fmt: skip
        for i, j, similarity in pairs
    ]


def find_label_issues(
    dataset: ImageDataset,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "auto",
    image_size: int | None = None,
    layers: Sequence[str] = ("final",),
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    batch_size: int = 64,
    notice: Callable[[str], None] | None = None,
    **settings: object,
) -> LabelIssues:
    """Images of ``dataset`` whose label looks wrong, ranked worst first, and pairs of
    near-duplicate images.

    Features come from the frozen ``backbone`` through the feature cache (``cache_dir``,
    default: the one every command uses; ``cache=False`` computes them afresh), the same
    features feature extraction trains on. ``settings``: ``folds`` (5), ``seed`` (0),
    ``rank_by`` ("self_confidence" or "normalized_margin"), ``probe_l2`` (0.1),
    ``passes`` (2: the second scores every image again with probes that never trained
    on a label the first flagged),
    ``duplicate_similarity`` (cosine, 0.95), ``outlier_similarity`` (0.2: an image whose
    5 nearest neighbours average below it is an outlier). Reads the images; writes
    nothing but cache entries.
    """
    from headstart.backbones.registry import create_backbone
    from headstart.features.cache import FeatureCache, cached_features, default_cache_dir

    if not isinstance(dataset, ImageDataset):
        raise invalid("find_label_issues", "dataset", "an ImageDataset", type(dataset).__name__)
    merged = check_issue_settings(settings)  # before any image is read
    store = FeatureCache(Path(cache_dir or default_cache_dir())) if cache else None
    model = create_backbone(backbone, weights, image_size=image_size)
    found, _ = cached_features(
        model, dataset, store, layers=tuple(layers), device=device, batch_size=batch_size,
        notice=notice,
    )  # fmt: skip
    features = np.concatenate([found[layer] for layer in layers], axis=1)
    return issues_from_features(dataset, features, **merged)  # type: ignore[arg-type]
