"""Successive halving: a cheaper ranking (issue 25). Measured against ``method="full"``
(docs/BENCHMARKS.md, sections 19, 19b): the same pick or within a point, in 0.44-0.53
of the time on a quiet machine, but a less faithful order (weighted tau 0.65 against
0.82 on Fashion-MNIST), so it is not the default.

Ranking every candidate on every training image costs one extraction per (backbone,
size) over all of them plus five probe fits per candidate. Most candidates are clearly
out after a look at a few images, so:

1. every candidate is scored (probe CV, LogME, kNN; the same score) on a stratified
   eighth of the training images (at least ``MIN_PER_CLASS`` of each class);
2. the bottom half is dropped and the rest scored on twice as many images, and so on,
   up to half of the training images (``LAST_SHARE``): probes trained on 800 of 1,000 images rank
   the candidates as those trained on all do (BENCHMARKS 9a), and the images past
   half cost the most (the survivors are the largest inputs);
3. a candidate in the half kept whose probe accuracy is too far below the round's best
   to catch up (``CATCH_UP_Z`` standard errors of the difference) is dropped too, and
   once one candidate is left no round scores it alone;
4. the order: the last round's candidates by their score there, then those dropped in
   the round before by theirs, and so on.

Only the images a round needs are extracted, so a (backbone, size) whose candidates are
all dropped early costs an eighth of its extraction; the images are nested (each round's
are the previous round's and more), so a survivor extracts only the new ones. Within a
(backbone, size) and a round, every fold is shared and a wider layer set's probe starts
from the fitted probe of a narrower set it contains (its weights for the layers they
share, zeros for the others): the same optimum, fewer L-BFGS steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from headstart.errors import HeadstartError
from headstart.rank.pairs import candidate_score, group_pairs, open_pair
from headstart.rank.ranking import Candidate, CandidateScore, _score, order_key
from headstart.rank.scores import cross_validated_probe

__all__ = [
    "CATCH_UP_Z",
    "FIRST_SHARE",
    "KEEP",
    "LAST_SHARE",
    "MIN_PER_CLASS",
    "halving_rounds",
    "image_order",
]

FIRST_SHARE = 1 / 8  # of the training images, for the first round
LAST_SHARE = 1 / 2  # the last round's images, at most
KEEP = 1 / 2  # of each round's candidates go on to the next (the bottom half dropped)
MIN_PER_CLASS = 8  # images per class in the first round, or no halving (ranked in full)
# A candidate whose cross-validated probe accuracy is this many standard errors (of the
# difference of two accuracies on the round's images) below the round's best cannot
# catch up on more images: it is dropped even from the half kept. None: never.
CATCH_UP_Z: float | None = 3.0


def halving_rounds(images: int, classes: int, candidates: int) -> list[tuple[int, int]]:
    """(images, candidates) of each round, at most; one round of everything when the set
    is too small for a first round of ``MIN_PER_CLASS`` images per class, or there are
    only two candidates. No round scores a single candidate: more images would not
    change the order."""
    first = math.ceil(images * FIRST_SHARE)
    if first < MIN_PER_CLASS * classes or candidates <= 2:
        return [(images, candidates)]
    last = math.ceil(images * LAST_SHARE)
    rounds = [(first, candidates)]
    while rounds[-1][0] < last and math.ceil(rounds[-1][1] * KEEP) > 1:
        n, alive = rounds[-1]
        rounds.append((min(2 * n, last), math.ceil(alive * KEEP)))
    return rounds


def image_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """The training rows in a seeded order whose every prefix is stratified: each class
    spread evenly over the order, its first two images ahead of everything (so each
    round's folds hold every class)."""
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        keys[members] = (np.arange(len(members)) + rng.random()) / len(members)
        keys[members[:2]] -= 2
    return np.argsort(keys, kind="stable")


def rank_by_halving(
    images: Any,
    candidates: Sequence[Candidate],
    rounds: list[tuple[int, int]],
    *,
    notice: Callable[[str], None],
    **options: Any,
) -> tuple[list[CandidateScore], list[str]]:
    """The scores in ranking order (failed ones after), and a note on the rounds."""
    options = {**options, "notice": notice}
    labels = images.dataset.labels
    order = image_order(labels, options["seed"])
    failed: list[CandidateScore] = []
    pairs = _open_pairs(candidates, failed, notice, options)
    alive = {c for pair in pairs.values() for c in pair.members}
    dropped: list[list[CandidateScore]] = []  # each round's dropped, best first
    survivors: list[CandidateScore] = []
    done: list[str] = []
    for i, (images_in_round, _) in enumerate(rounds):
        if i:  # the previous round's best go on, but not those that cannot catch up
            keep = max(1, math.ceil(len(survivors) * KEEP))
            behind = {s.candidate for s in cannot_catch_up(survivors, rounds[i - 1][0])}
            alive = {s.candidate for s in survivors[:keep]} - behind
            if len(alive) <= 1:  # one left: more images would not change the order
                done[-1] += " (the rest could not catch up)" if behind else ""
                break
            dropped.append([s for s in survivors if s.candidate not in alive])
        rows = order[:images_in_round]
        survivors = []
        for key, pair in pairs.items():
            members = [c for c in pair.members if c in alive]
            if members:
                survivors += _score_round(pair, members, rows, images, labels, failed, options, key)
        _score(survivors)
        survivors.sort(key=order_key)
        done.append(f"{len(survivors)} on {images_in_round}")
        notice(f"round {i + 1}: {len(survivors)} candidates on {images_in_round} images")
    scores = survivors + [s for group in reversed(dropped) for s in group]
    note = (
        f"successive halving: candidates scored on {', '.join(done)} of the "
        f"{len(labels)} training images (rank(..., method='full') scores all on all)"
    )
    return scores + failed, [note]


def cannot_catch_up(scores: Sequence[CandidateScore], images: int) -> list[CandidateScore]:
    """Those of ``scores`` (a round's, on ``images`` images) whose probe accuracy is
    more than ``CATCH_UP_Z`` standard errors below the best's: the standard error of
    the difference of two accuracies near the best's p, sqrt(2 p (1 - p) / images),
    with p moved towards a half as Agresti and Coull do (so a perfect score on a few
    images still has an error). The best itself is never among them."""
    if CATCH_UP_Z is None:
        return []
    known = [s for s in scores if s.predicted_accuracy is not None]
    if len(known) < 2:
        return []
    best = max(s.predicted_accuracy for s in known)
    near = (best * images + 2) / (images + 4)  # Agresti-Coull: not 0 at 100 %
    margin = CATCH_UP_Z * math.sqrt(2 * near * (1 - near) / images)
    return [s for s in known if s.predicted_accuracy < best - margin]


def _open_pairs(
    candidates: Sequence[Candidate],
    failed: list[CandidateScore],
    notice: Callable[[str], None],
    options: dict[str, Any],
) -> dict[tuple[str, int], Any]:
    pairs = {}
    for (name, size), members in group_pairs(candidates).items():
        try:
            pair = open_pair(name, size, members, failed, weights=options["weights"],
                             device=options["device"], seed=options["seed"])  # fmt: skip
        except HeadstartError as exc:
            failed += [CandidateScore(c, error=str(exc), exception=exc) for c in members]
            notice(f"{name} at {size} px: skipped ({exc})")
            continue
        if pair is not None:
            pairs[(name, size)] = pair
    return pairs


def _score_round(
    pair: Any,
    members: list[Candidate],
    rows: np.ndarray,
    images: Any,
    labels: np.ndarray,
    failed: list[CandidateScore],
    options: dict[str, Any],
    key: tuple[str, int],
) -> list[CandidateScore]:
    """``members`` of one (backbone, size) scored on ``rows``; narrower layer sets
    first, each wider one's probe started from the widest narrower set it contains."""
    notice = options["notice"]
    try:
        notice(f"{key[0]} at {key[1]} px: features of {len(rows)} images")
        features = pair.grow(rows, images, options["cache"], device=options["device"],
                             batch_size=options["batch_size"], notice=notice)  # fmt: skip
    except HeadstartError as exc:  # an image that fails to decode, say
        # ``members``, not all of the pair's: those dropped in an earlier round keep
        # the scores they had there.
        failed += [CandidateScore(c, error=str(exc), exception=exc) for c in members]
        pair.members = []
        notice(f"{key[0]} at {key[1]} px: skipped ({exc})")
        return []
    y = labels[rows]
    widths = {layer: values.shape[1] for layer, values in features.items()}
    fitted: dict[tuple[str, ...], list[nn.Linear]] = {}
    out = []
    for candidate in sorted(members, key=lambda c: sum(widths[layer] for layer in c.layers)):
        x = np.concatenate([features[layer] for layer in candidate.layers], axis=1)
        init = _warm_start(candidate.layers, fitted, widths)
        accuracy, heads = cross_validated_probe(
            x, y, folds=options["folds"], seed=options["seed"], init=init
        )  # fmt: skip
        fitted[candidate.layers] = heads
        out.append(candidate_score(candidate, x, y, pair, accuracy))
    return out


def _warm_start(
    layers: tuple[str, ...], fitted: dict[tuple[str, ...], list[nn.Linear]], widths: dict[str, int]
) -> list[nn.Linear] | None:
    """Per-fold heads for ``layers`` from the widest fitted set whose layers it holds."""
    import torch

    inside = [s for s in fitted if set(s) <= set(layers) and fitted[s]]
    if not inside:
        return None
    source = max(inside, key=lambda s: sum(widths[layer] for layer in s))
    offsets, at = {}, 0
    for layer in layers:
        offsets[layer], at = at, at + widths[layer]
    heads = []
    for head in fitted[source]:
        start = nn.Linear(at, head.out_features)
        with torch.no_grad():
            start.weight.zero_()
            start.bias.copy_(head.bias)
            column = 0
            for layer in source:
                width = widths[layer]
                start.weight[:, offsets[layer] : offsets[layer] + width] = head.weight[
                    :, column : column + width
                ]
                column += width
        heads.append(start)
    return heads
