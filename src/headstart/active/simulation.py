"""How many labels active learning saves: suggested labels against random ones, simulated
on images whose labels are known (``active_curve``).

From the same seed set (a few labels per class), two arms label the same number of pool
images per round: one takes ``suggest``'s picks (margin uncertainty, class coverage, a
diverse batch; the cold start while some class has fewer than two labels), the other a
random draw. After each round a linear probe (feature extraction's head) is refitted on
each arm's labelled images and scored on the same test images. A pool image's label is
read only once an arm has picked it, as a person labelling it would reveal it.

Features only, no images: on cached features a round takes about a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from headstart._internal.validation import check_finite, check_int, invalid
from headstart.active.selection import cold_start_batch, normalised, uncertain_batch
from headstart.active.suggesting import MIN_LABELS_PER_CLASS
from headstart.errors import DataError

__all__ = ["ActiveCurve", "CurvePoint", "active_curve", "seed_set"]

OWNER = "active_curve"


@dataclass(frozen=True)
class CurvePoint:
    """One round's result: labelled images so far (in all and per class) and the test
    accuracy of the probe fitted on them."""

    labelled: int
    labels_per_class: float
    accuracy: float


@dataclass(frozen=True)
class ActiveCurve:
    """Both arms of one seed, round by round. ``seed_rows``: the seed set's training rows;
    ``*_picks``: the training rows each round added (pool rows, never a seed row, never
    one twice); ``*_points``: after the seed set, then after each round."""

    seed: int
    batch: int
    classes: int
    test_images: int
    seed_rows: tuple[int, ...]
    active_picks: tuple[tuple[int, ...], ...]
    random_picks: tuple[tuple[int, ...], ...]
    active_points: tuple[CurvePoint, ...]
    random_points: tuple[CurvePoint, ...]

    @property
    def random_final(self) -> float:
        """Random labelling's accuracy after its last round: the target active races to."""
        return self.random_points[-1].accuracy

    def labels_to_match(self) -> float | None:
        """Labels per class at the first round where active reached random's final
        accuracy (None: it did not within these rounds)."""
        return first_reaching(self.active_points, self.random_final)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (what a comparison's results.json records per seed)."""
        return {
            "seed": self.seed,
            "batch": self.batch,
            "seed_set": len(self.seed_rows),
            "test_images": self.test_images,
            "active": [_point(p) for p in self.active_points],
            "random": [_point(p) for p in self.random_points],
            "random_final": self.random_final,
            "active_labels_per_class_to_match": self.labels_to_match(),
        }


def _point(point: CurvePoint) -> dict[str, Any]:
    return {
        "labelled": point.labelled,
        "labels_per_class": point.labels_per_class,
        "accuracy": point.accuracy,
    }


def first_reaching(points: Any, target: float) -> float | None:
    """Labels per class of the first point whose accuracy is at least ``target`` (points:
    ``CurvePoint``s or their dicts); None when none is."""
    for p in points:
        labels, accuracy = (
            (p["labels_per_class"], p["accuracy"]) if isinstance(p, dict) else
            (p.labels_per_class, p.accuracy)
        )  # fmt: skip
        if accuracy >= target - 1e-12:
            return labels
    return None


def seed_set(labels: np.ndarray, classes: int, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` rows of each class drawn with ``seed`` (sorted): the labels both arms
    start from."""
    rng = np.random.default_rng([seed, 0])
    rows = [
        rng.choice(np.flatnonzero(labels == k), per_class, replace=False) for k in range(classes)
    ]
    return np.sort(np.concatenate(rows))


def active_curve(
    features: np.ndarray,
    labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    classes: int | None = None,
    seed_per_class: int = 2,
    rounds: int = 5,
    batch: int = 20,
    seed: int = 0,
    l2: float = 1e-3,
    seed_rows: Any = None,
) -> ActiveCurve:
    """Active against random labelling, ``rounds`` rounds of ``batch`` labels each.

    ``features``/``labels``: the training images (N, D) and their classes; the seed set is
    ``seed_per_class`` of each class, the other rows are the pool. ``test_features``/
    ``test_labels``: the images both arms are scored on. ``classes``: how many (default:
    one more than the largest label). ``l2``: the probe's regularisation. ``seed_rows``:
    the seed set's rows, when it is given rather than drawn (then ``seed_per_class`` is not
    used). Stops early when the pool runs out. Deterministic for a seed.
    """
    x, y, tx, ty = _checked(features, labels, test_features, test_labels)
    classes = int(max(y.max(), ty.max())) + 1 if classes is None else classes
    check_int(OWNER, "classes", classes, low=2)
    for name, value in (("seed_per_class", seed_per_class), ("rounds", rounds), ("batch", batch)):
        check_int(OWNER, name, value)
    check_int(OWNER, "seed", seed, low=0)
    check_finite(OWNER, "l2", l2, low=0)
    if seed_rows is None:
        check_enough(y, classes, seed_per_class, batch, names=("seed_per_class", "batch"))
        start = seed_set(y, classes, seed_per_class, seed)
    else:
        start = _given_rows(seed_rows, len(y), batch)
    with _one_thread():
        z = normalised(x)  # every training row: the reference suggest standardises by
        arms = {}
        for arm in ("active", "random"):
            arms[arm] = _run_arm(arm, x, y, z, tx, ty, start, classes, rounds, batch, seed, l2)
    return ActiveCurve(
        seed=seed,
        batch=batch,
        classes=classes,
        test_images=len(ty),
        seed_rows=tuple(int(i) for i in start),
        active_picks=arms["active"][0],
        random_picks=arms["random"][0],
        active_points=arms["active"][1],
        random_points=arms["random"][1],
    )


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread for the loop, as it was after. Its probes are small (a few
    hundred rows), and L-BFGS makes thousands of tiny calls: with two threads on a busy
    2-core machine each waits for a descheduled peer. Measured at load ~7: a 420 x 1752
    probe took 8.6 s on 2 threads, 0.08 s on 1 (docs/BENCHMARKS.md, section 18)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_enough(
    labels: np.ndarray,
    classes: int,
    seed_per_class: int,
    batch: int,
    *,
    names: tuple[str, str],
    class_names: Any = None,
) -> None:
    """DataError unless every class has more than ``seed_per_class`` images (some left
    for the pool) and the pool holds at least one round of ``batch``; ``names``: how the
    caller calls those two parameters (written ``{name}`` in the hint)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)
    smallest = int(np.argmin(counts))
    if counts[smallest] <= seed_per_class:
        name = smallest if class_names is None else class_names[smallest]
        raise DataError(
            f"Active against random labelling needs more than {seed_per_class} training "
            f"images in every class ({seed_per_class} for the seed set, the rest for the "
            f"pool); class {name!r} has {int(counts[smallest])}.",
            hint=f"Lower {{{names[0]}}} below {int(counts[smallest])}, or add images of "
            f"class {name!r}.",
        )
    pool = int(counts.sum()) - classes * seed_per_class
    if pool < batch:
        raise DataError(
            f"Active against random labelling needs a pool of at least one round of "
            f"{batch} images; the training images left after the seed set are {pool}.",
            hint=f"Lower {{{names[1]}}} to {pool} or less, or {{{names[0]}}}.",
        )


def _given_rows(rows: Any, n: int, batch: int) -> np.ndarray:
    start = np.asarray(rows)
    ok = start.ndim == 1 and len(start) and start.dtype.kind in "iu"
    if not ok or len(np.unique(start)) != len(start) or start.min() < 0 or start.max() >= n:
        raise invalid(OWNER, "seed_rows", f"distinct training rows in [0, {n})", rows)
    if n - len(start) < batch:
        raise invalid(OWNER, "batch", f"<= {n - len(start)} (the pool)", batch)
    return np.sort(start.astype(np.int64))


def _checked(*arrays: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y, tx, ty = (np.asarray(a) for a in arrays)
    for name, features, labels in (("features", x, y), ("test_features", tx, ty)):
        if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
            raise invalid(
                OWNER, name, "a 2-D array with one row per label",
                f"shape {features.shape} for {labels.shape[0] if labels.ndim else 0} labels",
            )  # fmt: skip
    if x.shape[1] != tx.shape[1]:
        raise invalid(OWNER, "test_features", f"{x.shape[1]} columns, as features", tx.shape[1])
    if not len(y) or not len(ty):
        name = "labels" if not len(y) else "test_labels"
        raise invalid(OWNER, name, "at least one image", 0)
    return x, y.astype(np.int64), tx, ty.astype(np.int64)


def _run_arm(
    arm: str,
    x: np.ndarray,
    y: np.ndarray,
    z: Any,
    tx: np.ndarray,
    ty: np.ndarray,
    start: np.ndarray,
    classes: int,
    rounds: int,
    batch: int,
    seed: int,
    l2: float,
) -> tuple[tuple[tuple[int, ...], ...], tuple[CurvePoint, ...]]:
    """(the rows each round added, the points) of one arm. Only ``y[labelled]`` is read:
    a pool row's label is revealed once the arm picks it."""
    from headstart.train.probe import fit_linear_probe

    rng = np.random.default_rng([seed, 1])  # the random arm's draws
    labelled = start.copy()
    pool = np.setdiff1d(np.arange(len(y)), labelled)
    picks: list[tuple[int, ...]] = []
    points: list[CurvePoint] = []
    for step in range(rounds + 1):
        known = y[labelled]
        probe = fit_linear_probe(x[labelled], known, classes, l2=l2, seed=seed)
        accuracy = probe.score(tx, ty)
        points.append(CurvePoint(len(labelled), len(labelled) / classes, accuracy))
        if step == rounds or not len(pool):
            break
        if arm == "random":
            chosen = rng.choice(pool, min(batch, len(pool)), replace=False)
        else:
            chosen = pool[_suggested(x, z, labelled, known, pool, probe, classes, batch, seed)]
        picks.append(tuple(int(i) for i in chosen))
        labelled = np.concatenate([labelled, chosen])
        pool = np.setdiff1d(pool, chosen)
    return tuple(picks), tuple(points)


def _suggested(
    x: np.ndarray,
    z: Any,
    labelled: np.ndarray,
    known: np.ndarray,
    pool: np.ndarray,
    probe: Any,
    classes: int,
    batch: int,
    seed: int,
) -> np.ndarray:
    """Positions in ``pool`` that ``suggest`` would pick: as its ``choose`` does, the
    cold start while some class has fewer than ``MIN_LABELS_PER_CLASS`` labels."""
    if int(np.bincount(known, minlength=classes).min()) < MIN_LABELS_PER_CLASS:
        found = cold_start_batch(z[pool], batch, seed, z[labelled], known)
    else:
        proba = probe.predict_proba(x[pool])
        found = uncertain_batch(z[labelled], known, z[pool], proba, batch, seed)
    return np.asarray([p.index for p in found], dtype=np.int64)
