"""Re-score a saved ground-truth run of bench_rank.py with the ranking's current score
(headstart.rank.ranking.SCORE_WEIGHTS), and check how those weights were chosen.

A saved run holds, per dataset and candidate, everything the score reads (the
cross-validated probe, LogME, the input size) beside the true accuracy, so a new way
of ordering is measured without extracting anything again. Printed:

1. per dataset: weighted Kendall tau (scipy.stats.weightedtau defaults, as bench_rank)
   and the pick's gap to the best true accuracy, for the probe alone, LogME alone and
   the current score;
2. leave one dataset out: for each dataset, the weights (over a small grid) that score
   best on the *other* datasets, then their tau and gap on this one. The mean of those
   is the honest estimate for data the weights were not chosen on (the Fashion-MNIST
   draws are related, so it is still optimistic).

Run: PYTHONPATH=src .venv/bin/python bench/rank_rescore.py docs/benchmarks/rank/run2-10000-test.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import weightedtau

from headstart.rank.ranking import SCORE_WEIGHTS

GRID = list(itertools.product((1.0,), (0.0, 0.5, 1.0), (0.0, 0.25, 0.5, 1.0)))


def z(values: list[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return (v - v.mean()) / v.std() if v.std() > 1e-12 else np.zeros_like(v)


def score(rows: list[dict], weights: tuple[float, float, float]) -> np.ndarray:
    probe, logme, size = weights
    return (
        probe * z([r["predicted_accuracy"] for r in rows])
        + logme * z([r["logme"] for r in rows])
        + size * z([math.log(r["candidate"]["image_size"]) for r in rows])
    )


def judged(rows: list[dict], predicted: np.ndarray) -> tuple[float, float]:
    true = np.array([r["true_accuracy"] for r in rows])
    return float(weightedtau(true, predicted)[0]), 100 * float(
        true.max() - true[predicted.argmax()]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a JSON file written by bench_rank.py --out")
    args = parser.parse_args()
    datasets = [
        (d["dataset"], [r for r in d["rows"] if r.get("error") is None])
        for d in json.loads(args.run.read_text())["datasets"]
    ]
    current = tuple(SCORE_WEIGHTS[k] for k in ("probe", "logme", "log_image_size"))
    ways = {
        "probe alone": lambda rows: score(rows, (1, 0, 0)),
        "LogME alone": lambda rows: score(rows, (0, 1, 0)),
        f"score {current}": lambda rows: score(rows, current),
    }
    print("| dataset | " + " | ".join(f"wτ {w} | gap" for w in ways) + " |")
    print("| --- |" + " --: | --: |" * len(ways))
    totals = {w: [] for w in ways}
    for name, rows in datasets:
        cells = []
        for way, order in ways.items():
            tau, gap = judged(rows, order(rows))
            totals[way].append((tau, gap))
            cells.append(f"{tau:.2f} | {gap:.1f} pt")
        print(f"| {name} | " + " | ".join(cells) + " |")
    cells = [
        f"{np.mean([t for t, _ in v]):.2f} | {sum(g <= 1.0 for _, g in v)} of {len(v)} within 1 pt"
        for v in totals.values()
    ]
    print("| mean | " + " | ".join(cells) + " |")
    print("\nleave one dataset out (weights: probe, LogME, log input size):")
    held = []
    for i, (name, rows) in enumerate(datasets):
        others = [r for j, (_, r) in enumerate(datasets) if j != i]
        best = max(GRID, key=lambda w: np.mean([judged(r, score(r, w))[0] for r in others]))
        tau, gap = judged(rows, score(rows, best))
        held.append((tau, gap))
        print(f"  {name}: chosen on the others {best}: wτ {tau:.2f}, gap {gap:.1f} pt")
    print(
        f"  mean wτ {np.mean([t for t, _ in held]):.2f}, "
        f"{sum(g <= 1.0 for _, g in held)} of {len(held)} within 1 pt"
    )


if __name__ == "__main__":
    main()
