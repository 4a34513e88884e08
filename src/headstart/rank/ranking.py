"""Rank candidate configurations (backbone x input size x feature layers) without
training them: each (backbone, size) runs over the labelled training images once
(features cached), and every layer set is scored from those features by LogME, a
cross-validated linear probe and kNN.

The predicted accuracy is the cross-validated probe's: it is an accuracy (LogME is a
score on its own scale), and it estimates exactly the model feature extraction would
train. Ties (accuracies move in steps of 1/N) go to LogME, then to the narrower
features; latency is measured for the table and the Pareto front, not for the order
(it is the noisiest number here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart._internal.validation import invalid
from headstart.data.dataset import ImageDataset
from headstart.errors import DataError, HeadstartError
from headstart.rank.scores import probe_accuracy

__all__ = [
    "LAYER_SETS",
    "Candidate",
    "CandidateScore",
    "Ranking",
    "candidates_for",
    "rank",
]

# The layer sets tried by default: the pooled output alone, with the stage before it,
# the four-stage set feature extraction uses by default (far from ImageNet, earlier
# stages carry more of what transfers), and those four also pooled over 2x2 regions
# (where things are: on Fashion-MNIST at 100 labels per class, +1.0 to +1.6 points at
# the native sizes, +1.1 for Lite0 at 112 px; BENCHMARKS 9c).
SPATIAL_LAYERS = ("stage-3", "stage-2", "stage-1", "final",
                  "stage-3_2x2", "stage-2_2x2", "stage-1_2x2", "final_2x2")  # fmt: skip
LAYER_SETS: tuple[tuple[str, ...], ...] = (
    ("final",),
    ("stage-2", "final"),
    ("stage-3", "stage-2", "stage-1", "final"),
    SPATIAL_LAYERS,
)


@dataclass(frozen=True)
class Candidate:
    backbone: str
    image_size: int
    layers: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.backbone} {self.image_size}px {'+'.join(self.layers)}"


@dataclass
class CandidateScore:
    candidate: Candidate
    predicted_accuracy: float | None = None  # the cross-validated probe's
    score: float | None = None  # what orders the ranking (SCORE_WEIGHTS), relative to the others
    logme: float | None = None
    knn_accuracy: float | None = None
    feature_width: int | None = None
    extraction_seconds: float | None = None  # this run's, for its (backbone, size)
    images_from_cache: int = 0
    images_scored: int | None = None  # training images its scores came from (halving: fewer)
    parameters: int | None = None
    latency_ms: float | None = None  # batch-1 forward pass of the backbone, median
    error: str | None = None  # why it could not be scored
    exception: HeadstartError | None = field(default=None, repr=False, compare=False)

    def reason(self, words: dict[str, str] | None = None) -> str | None:
        """Why it failed, in a face's own words (``--layers`` on the command line)."""
        return self.exception.render(words) if self.exception is not None else self.error

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("exception")
        out["candidate"] = {**asdict(self.candidate), "name": self.candidate.name}
        return out


@dataclass
class Ranking:
    """Candidates best first (those that failed last, with their reason)."""

    scores: list[CandidateScore]
    images: int
    classes: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def ranked(self) -> list[CandidateScore]:
        return [s for s in self.scores if s.error is None]

    @property
    def failed(self) -> list[CandidateScore]:
        return [s for s in self.scores if s.error is not None]

    @property
    def best(self) -> CandidateScore:
        if not self.ranked:
            reasons = "; ".join(f"{s.candidate.name}: {s.reason()}" for s in self.failed)
            raise DataError(f"No candidate could be scored ({reasons}).")
        return self.ranked[0]

    def pareto(self) -> list[CandidateScore]:
        """The candidates no other beats on both predicted accuracy and latency."""
        rows = [s for s in self.ranked if s.latency_ms is not None]
        return [s for s in rows if not any(_dominates(o, s) for o in rows)]

    def format(self, top: int | None = None, words: dict[str, str] | None = None) -> str:
        """The ranking as a text table; ``words`` spell failures as a face's flags."""
        rows = self.ranked[:top] if top else self.ranked
        width = max([len(s.candidate.name) for s in self.scores] + [9])
        lines = [
            f"{'#':>2}  {'candidate':<{width}}  {'score':>6}  {'probe CV':>8}  {'LogME':>7}  "
            f"{'kNN':>6}  "
            f"{'params':>6}  {'batch-1':>8}  {'extract':>8}"
        ]
        for i, s in enumerate(rows, start=1):
            lines.append(
                f"{i:>2}  {s.candidate.name:<{width}}  {s.score:>+6.2f}  "
                f"{_pct(s.predicted_accuracy):>8}  "
                f"{s.logme:>7.3f}  {_pct(s.knn_accuracy):>6}  {s.parameters / 1e6:>5.1f}M  "
                f"{s.latency_ms:>6.1f}ms  {_seconds(s):>8}"
            )
        for s in self.failed:
            lines.append(f" -  {s.candidate.name:<{width}}  failed: {s.reason(words)}")
        return "\n".join(lines)

    def why_best(self) -> str:
        """Why the first candidate leads, in one sentence."""
        best = self.best
        text = (
            f"the highest score ({best.score:+.2f}: cross-validated probe "
            f"{best.predicted_accuracy:.1%}, LogME {best.logme:.3f}, "
            f"{best.candidate.image_size} px input)"
        )
        if len(self.ranked) > 1:
            second = self.ranked[1]
            if second.score == best.score:
                text += f", tied with {second.candidate.name}; the probe, then LogME decided"
            else:
                text += f", ahead of {second.candidate.name} ({second.score:+.2f})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "classes": self.classes,
            "seconds": self.seconds,
            "notes": self.notes,
            "scores": [s.to_dict() for s in self.scores],
            "pareto": [s.candidate.name for s in self.pareto()],
            # so a report built from the JSON alone can say it (compare's does)
            **({"why_best": self.why_best()} if self.ranked else {}),
        }


def _dominates(a: CandidateScore, b: CandidateScore) -> bool:
    """``a`` is at least as accurate and as fast as ``b``, and better at one of them."""
    at_least = a.predicted_accuracy >= b.predicted_accuracy and a.latency_ms <= b.latency_ms
    better = a.predicted_accuracy > b.predicted_accuracy or a.latency_ms < b.latency_ms
    return at_least and better


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _seconds(score: CandidateScore) -> str:
    if score.extraction_seconds is None:
        return "-"
    if score.images_from_cache and score.extraction_seconds < 0.5:
        return "cached"
    return f"{score.extraction_seconds:.1f}s"


def candidates_for(
    backbones: Sequence[str],
    image_sizes: Sequence[int] | None = None,
    layer_sets: Sequence[Sequence[str]] | None = None,
    native_sizes: dict[str, int] | None = None,
) -> list[Candidate]:
    """Every (backbone, size, layer set). Without ``image_sizes``, each backbone at its
    own input size and at half of it (small images often transfer as well at half the
    cost); ``native_sizes`` gives those own sizes."""
    layer_sets = [tuple(s) for s in (layer_sets or LAYER_SETS)]
    out = []
    for name in backbones:
        if image_sizes:
            sizes = list(dict.fromkeys(image_sizes))
        else:
            own = (native_sizes or {}).get(name, 224)
            sizes = [own, own // 2]
        out += [Candidate(name, size, layers) for size in sizes for layers in layer_sets]
    return out


METHODS = ("halving", "full")
# What rank, train --backbone auto and the rank command use. Full: halving met the
# time target on Fashion-MNIST but missed the weighted-tau one (BENCHMARKS 19).
DEFAULT_METHOD = "full"


def rank(
    dataset: ImageDataset,
    candidates: Sequence[Candidate],
    *,
    weights: str = "auto",
    cache: Any = None,
    device: str = "auto",
    batch_size: int = 64,
    folds: int = 5,
    seed: int = 0,
    notice: Callable[[str], None] | None = None,
    method: str = DEFAULT_METHOD,
) -> Ranking:
    """Score ``candidates`` on a labelled ``dataset`` (training images only), best first.

    A candidate that cannot be built (weights not on this machine, a layer the model
    lacks, a size it refuses) is kept with its reason, and the others go on.
    ``cache``: a ``FeatureCache`` the features are kept in (a second ranking, or the
    training that follows, extracts nothing again). ``notice`` hears progress lines.
    ``method``: "full" (every candidate on every image: the default and the reference)
    or "halving" (successive halving: every candidate scored on a share of the images,
    the bottom half dropped and the rest scored on twice as many; see
    ``headstart.rank.halving``; sets too small to halve are ranked in full). Halving
    ranked ~5x faster on Fashion-MNIST but its order was worse (BENCHMARKS 19).
    """
    from headstart.rank.halving import halving_rounds, rank_by_halving
    from headstart.rank.pairs import DecodedImages

    if method not in METHODS:
        raise invalid("rank", "method", f"one of {', '.join(map(repr, METHODS))}", method)
    if not candidates:
        raise invalid("rank", "candidates", "at least one candidate", candidates)
    present = _check_labels(dataset)
    tell = notice or (lambda text: None)
    start = time.perf_counter()
    images = DecodedImages(dataset)
    options = {"weights": weights, "cache": cache, "device": device,
               "batch_size": batch_size, "folds": folds, "seed": seed, "notice": tell}  # fmt: skip
    rounds = halving_rounds(len(dataset), present, len(candidates))
    notes = []
    if method == "halving" and len(rounds) > 1:
        scores, notes = rank_by_halving(images, candidates, rounds, **options)
    else:
        scores = _rank_full(images, candidates, **options)
    ranked = [s for s in scores if s.error is None]
    if method == "full" or len(rounds) == 1:
        _score(ranked)
        ranked.sort(key=order_key)
    return Ranking(
        scores=ranked + [s for s in scores if s.error is not None],
        images=len(dataset),
        classes=present,
        seconds=time.perf_counter() - start,
        notes=notes,
    )


def order_key(s: CandidateScore) -> tuple:
    """Best first: the score, then the probe, then LogME, then the narrower features."""
    return (-s.score, -s.predicted_accuracy, -s.logme, s.feature_width)


def _check_labels(dataset: ImageDataset) -> int:
    """How many classes have images; raises unless at least 2 do, each with 2 or more."""
    counts = np.bincount(dataset.labels, minlength=len(dataset.classes))
    present = int((counts > 0).sum())
    if present < 2:
        raise DataError(
            f"Ranking needs labelled images of at least 2 classes; {dataset.report.source} "
            f"has {present}."
        )
    few = [dataset.classes[k] for k in np.flatnonzero((counts > 0) & (counts < 2))]
    if few:
        raise DataError(
            f"Ranking cross-validates on the labelled images, so each class needs at least 2; "
            f"{', '.join(few[:5])} {'has' if len(few) == 1 else 'have'} 1."
        )
    return present


def _rank_full(
    images: Any, candidates: Sequence[Candidate], *, notice: Callable[[str], None], **options: Any
) -> list[CandidateScore]:
    """Every candidate scored on every training image (the reference)."""
    from headstart.rank.pairs import candidate_score, group_pairs, open_pair

    dataset = images.dataset
    everything = list(range(len(dataset)))
    scores: list[CandidateScore] = []
    for (name, size), members in group_pairs(candidates).items():
        try:
            pair = open_pair(name, size, members, scores, weights=options["weights"],
                             device=options["device"], seed=options["seed"])  # fmt: skip
            if pair is None:
                continue
            notice(f"{name} at {size} px: features of {len(dataset)} images")
            features = pair.grow(everything, images, options["cache"], device=options["device"],
                                 batch_size=options["batch_size"], notice=notice)  # fmt: skip
        except HeadstartError as exc:
            scores += [CandidateScore(c, error=str(exc), exception=exc) for c in members]
            notice(f"{name} at {size} px: skipped ({exc})")
            continue
        for candidate in pair.members:
            x = np.concatenate([features[layer] for layer in candidate.layers], axis=1)
            accuracy = probe_accuracy(x, dataset.labels, folds=options["folds"],
                                      seed=options["seed"])  # fmt: skip
            scores.append(candidate_score(candidate, x, dataset.labels, pair, accuracy))
    return scores


# How the ranking's order weighs its evidence, each as a z-score among the candidates:
# the cross-validated probe, LogME, and the input size (log). Alone, the probe ranked
# issue 14's ground truth (BENCHMARKS 9a: 8 datasets, every candidate trained) with a
# mean weighted Kendall tau of 0.42, its pick within 1 point of the best on 4 of 8:
# on ~1,000 images its 5-fold CV overrates half-size inputs, which LogME and the size
# do not. These weights scored 0.67 and 7 of 8, chosen on the other 7 datasets for
# each one in turn (leave one dataset out; BENCHMARKS 9b).
SCORE_WEIGHTS = {"probe": 1.0, "logme": 0.5, "log_image_size": 1.0}


def _score(ranked: list[CandidateScore]) -> None:
    """Each candidate's ``score``: SCORE_WEIGHTS over z-scores among ``ranked`` (a kind of
    evidence that does not vary, e.g. one input size for all, counts 0)."""

    def z(values: list[float]) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        spread = v.std()
        return (v - v.mean()) / spread if spread > 1e-12 else np.zeros_like(v)

    if not ranked:
        return
    total = (
        SCORE_WEIGHTS["probe"] * z([s.predicted_accuracy for s in ranked])
        + SCORE_WEIGHTS["logme"] * z([s.logme for s in ranked])
        + SCORE_WEIGHTS["log_image_size"] * z([math.log(s.candidate.image_size) for s in ranked])
    )
    for s, value in zip(ranked, total, strict=True):
        s.score = round(float(value), 6)  # ties stay ties across platforms


def save_ranking(ranking: Ranking, folder: Path, extra: dict[str, Any] | None = None) -> list[Path]:
    """``ranking.json`` and the accuracy-against-latency plot into ``folder``; ``extra``
    joins the JSON (compare records which draw was ranked)."""
    import json

    from headstart._internal.atomic import atomic_write
    from headstart.evaluation.plots import save_pareto_plot

    text = json.dumps({**ranking.to_dict(), **(extra or {})}, indent=2).encode()
    atomic_write(folder / "ranking.json", lambda handle: handle.write(text))
    rows = ranking.ranked
    front = {s.candidate.name for s in ranking.pareto()}
    png = save_pareto_plot(
        [(s.candidate.name, s.latency_ms, s.predicted_accuracy, s.candidate.name in front)
         for s in rows],
        folder / "ranking.png",
    )  # fmt: skip
    return [folder / "ranking.json", png]
