"""Class weights on imbalanced training images: balanced accuracy and accuracy with
``class_weights`` none (the old default), balanced, and auto (the new default).

auto trains exactly as the setting it picks, so it is not trained again: its rows in the
table are the runs of the setting it picks on those training images (``auto_picks``).

Training images: 100 per class drawn per seed (Fashion-MNIST's 60,000 training images,
or the bundled sample's 1,000), then the second half of the classes cut to 100/ratio
images each (ratio 10: those classes keep 10 %). Scored on the full balanced test split
(Fashion-MNIST's 10,000 t10k images; the sample's 1,000), where accuracy equals balanced
accuracy; "accuracy at training shares" weights each class's test recall by its share of
the training images: the expected accuracy on a test split drawn like the training one
(what `headstart train` measures on its own held-out 20 %).

Run: .venv/bin/python bench/bench_imbalance.py [--data fashion-mnist,sample]
     [--ratios 1,1.5,2,3,5,10] [--seeds 0,1,2] [--settings none,balanced]
     [--strategy feature-extraction] [--epochs N] [--image-size 112]
     [--out docs/benchmarks/imbalance.json]

Features come from the default feature cache, shared with every other run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from headstart.data.idx import load_fashion_mnist, load_sample
from headstart.data.split import sample_per_class
from headstart.estimator.image_classifier import ImageClassifier
from headstart.features.cache import default_cache_dir
from headstart.strategies.registry import get_strategy
from headstart.train.weighting import class_weighting


def imbalanced_draw(pool, per_class: int, ratio: float, seed: int):
    """``per_class`` images of every class, then the second half of the classes cut to
    ``per_class / ratio`` (the first images of the seeded draw, so draws nest)."""
    drawn = sample_per_class(pool, per_class, seed=seed)
    rng = np.random.default_rng([seed, 1])
    cut = max(1, math.ceil(per_class / ratio))
    keep = []
    for label in range(len(pool.classes)):
        rows = np.flatnonzero(drawn.labels == label)
        if label >= len(pool.classes) // 2:
            rows = np.sort(rng.permutation(rows)[:cut])
        keep.append(rows)
    return drawn.subset(np.sort(np.concatenate(keep)))


def score(clf, train, test) -> dict:
    evaluation = clf.evaluate(test, batch_size=256)
    recall = np.array([row["recall"] for row in evaluation["per_class"]])
    shares = np.bincount(train.labels, minlength=len(train.classes)) / len(train)
    return {
        "balanced_accuracy": evaluation["balanced_accuracy"],
        "accuracy": evaluation["accuracy"],
        "accuracy_at_training_shares": float(shares @ recall),
        "used": clf.config_.class_weights,
        "seconds": clf.fit_seconds_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist,sample")
    parser.add_argument("--ratios", default="1,1.5,2,3,5,10")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default="none,balanced")
    parser.add_argument("--strategy", default="feature-extraction")
    parser.add_argument("--epochs", type=int, help="gradient strategies: default their own")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/imbalance.json"))
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["data"], r["strategy"], r["ratio"], r["seed"], r["setting"]) for r in results}
    base = get_strategy(args.strategy).default_config().replace(image_size=args.image_size)
    if args.epochs:
        base = base.replace(epochs=args.epochs)
    for data in args.data.split(","):
        pool, test = load_fashion_mnist() if data == "fashion-mnist" else load_sample()
        for ratio in [float(r) for r in args.ratios.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                train = imbalanced_draw(pool, args.per_class, ratio, seed)
                for setting in args.settings.split(","):
                    key = (data, args.strategy, ratio, seed, setting)
                    if key in done:
                        continue
                    started = time.perf_counter()
                    clf = ImageClassifier(
                        strategy=args.strategy,
                        config=base.replace(class_weights=setting, seed=seed),
                        cache_dir=default_cache_dir(),
                    ).fit(train)
                    row = {
                        "data": data,
                        "strategy": args.strategy,
                        "ratio": ratio,
                        "seed": seed,
                        "setting": setting,
                        "train_images": len(train),
                        "auto_picks": class_weighting(
                            train.labels, len(train.classes), "auto"
                        ).used,
                        **score(clf, train, test),
                    }
                    results.append(row)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(results, indent=1) + "\n")
                    print(
                        f"{data} {args.strategy} ratio {ratio:g} seed {seed} {setting}"
                        f" ({row['used']}): balanced {row['balanced_accuracy']:.1%}, at "
                        f"training shares {row['accuracy_at_training_shares']:.1%} "
                        f"({time.perf_counter() - started:.0f}s)",
                        flush=True,
                    )
    print_table(results)


def print_table(results: list[dict]) -> None:
    """Mean over seeds per (data, strategy, ratio, setting), as the docs' table; the
    auto rows are the runs of the setting auto picked."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["data"], r["strategy"], r["ratio"], r["setting"]), []).append(r)
        if r["setting"] == r.get("auto_picks"):
            picked = {**r, "used": f"auto: {r['setting']}"}
            groups.setdefault((r["data"], r["strategy"], r["ratio"], "auto"), []).append(picked)
    print("| data | strategy | ratio | class weights | seeds | balanced acc. | acc. at training "
          "shares | gap |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (data, strategy, ratio, setting), rows in sorted(groups.items()):
        bal = 100 * np.mean([r["balanced_accuracy"] for r in rows])
        acc = 100 * np.mean([r["accuracy_at_training_shares"] for r in rows])
        used = "/".join(sorted({r["used"] for r in rows}))
        name = used if setting == "auto" or setting == used else f"{setting} ({used})"
        print(
            f"| {data} | {strategy} | {ratio:g} | {name} | {len(rows)} | {bal:.1f} % | "
            f"{acc:.1f} % | {acc - bal:.1f} |"
        )


if __name__ == "__main__":
    main()
