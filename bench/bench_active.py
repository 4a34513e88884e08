"""Active learning against random labelling: labels per class each needs for an accuracy.

From 10 labels per class, rounds of ``--batch`` labels chosen by ``headstart.suggest``'s
selection (margin uncertainty, class coverage, diverse batch) or at random, on the same
seed set, pool and test images; a linear probe (feature extraction's head) on cached
EfficientNet-Lite0 features is retrained each round. Datasets: Fashion-MNIST (a
stratified 10,100-image subset of the training set: 10 per class as the seed set, the
10,000 others as the pool; all 10,000 test images) and scikit-learn's digits (30 % test,
the rest seed set + pool). Also times one round as a user runs it: ``headstart.suggest``
on the 10,000-image pool (warm cache) plus retraining the probe.

Run: .venv/bin/python bench/bench_active.py [--seeds 0,1,2] [--image-size 112]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import headstart as hs
from headstart.active.selection import normalised, uncertain_batch
from headstart.backbones.registry import create_backbone
from headstart.data.split import sample_per_class, split_dataset
from headstart.features.cache import FeatureCache, cached_features, default_cache_dir
from headstart.train.probe import fit_linear_probe

LAYERS = ("stage-3", "stage-2", "stage-1", "final")


def features(backbone, dataset) -> np.ndarray:
    found, _ = cached_features(backbone, dataset, FeatureCache(default_cache_dir()), layers=LAYERS)
    return np.concatenate([found[layer] for layer in LAYERS], axis=1)


def curve(x, y, tx, ty, classes, seed, batch, until, active) -> list[tuple[float, float]]:
    """(labels per class, test accuracy) after each round, from 10 per class."""
    rng = np.random.default_rng(seed)
    labelled = np.concatenate(
        [rng.choice(np.flatnonzero(y == k), 10, replace=False) for k in range(classes)]
    )
    pool = np.setdiff1d(np.arange(len(y)), labelled)
    points = []
    while True:
        probe = fit_linear_probe(x[labelled], y[labelled], classes, seed=0)
        points.append((len(labelled) / classes, probe.score(tx, ty)))
        if len(labelled) / classes >= until or not len(pool):
            return points
        if active:
            ref = np.concatenate([x[labelled], x[pool]])
            picks = uncertain_batch(
                normalised(x[labelled], ref), y[labelled], normalised(x[pool], ref),
                probe.predict_proba(x[pool]), batch, seed,
            )  # fmt: skip
            chosen = pool[[p.index for p in picks]]
        else:
            chosen = rng.choice(pool, min(batch, len(pool)), replace=False)
        labelled = np.concatenate([labelled, chosen])
        pool = np.setdiff1d(pool, chosen)


def labels_needed(points, target) -> float | None:
    """Labels per class at the first round whose accuracy reaches ``target`` (None: never)."""
    return next((k for k, acc in points if acc >= target), None)


def run(name, train, test, backbone, seeds, batch, until_random, until_active) -> dict:
    began = time.perf_counter()
    x, tx = features(backbone, train), features(backbone, test)
    print(f"{name}: features of {len(train)} + {len(test)} images in "
          f"{time.perf_counter() - began:.0f}s", flush=True)  # fmt: skip
    classes = len(train.classes)
    rows = []
    for seed in seeds:
        rand = curve(x, train.labels, tx, test.labels, classes, seed, batch, until_random, False)
        act = curve(x, train.labels, tx, test.labels, classes, seed, batch, until_active, True)
        target = rand[-1][1]
        need = labels_needed(act, target)
        rows.append({"seed": seed, "random": rand, "active": act, "random_at_end": target,
                     "active_labels_per_class_to_match": need})  # fmt: skip
        print(f"  seed {seed}: random {rand[-1][0]:.0f}/class {target:.2%}; active reaches it "
              f"at {need} per class; active at {act[-1][0]:.0f}/class {act[-1][1]:.2%}",
              flush=True)  # fmt: skip
    return {"dataset": name, "pool_and_seed": len(train), "test": len(test), "batch": batch,
            "seeds": rows}  # fmt: skip


def round_time(backbone_size: int, train, seed: int = 0) -> float:
    """One round as a user runs it, warm cache: suggest 50 of the 10,000-image pool."""
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.choice(np.flatnonzero(train.labels == k), 10, replace=False)
                             for k in range(len(train.classes))])  # fmt: skip
    labelled = train.subset(picked)
    pool = train.subset(np.setdiff1d(np.arange(len(train)), picked))
    began = time.perf_counter()
    hs.suggest(labelled, pool, 50, seed=seed, image_size=backbone_size)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/active.json"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    backbone = create_backbone("tf_efficientnet_lite0", image_size=args.image_size)
    fm_train, fm_test = hs.load_fashion_mnist()
    fm_train = sample_per_class(fm_train, 1010, seed=0)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    dg_train, dg_test = split_dataset(hs.from_arrays(images, digits.target), test_size=0.3)
    results = [
        run("Fashion-MNIST", fm_train, fm_test, backbone, seeds, 50, 100, 60),
        run("digits", dg_train, dg_test, backbone, seeds, 20, 100, 60),
    ]
    times = [round_time(args.image_size, fm_train, seed) for seed in seeds]
    print(f"one round (suggest 50 of 10,000, warm cache): {', '.join(f'{t:.1f}s' for t in times)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "round_seconds": times}, indent=1))


if __name__ == "__main__":
    main()
