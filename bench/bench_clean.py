"""How well `headstart clean` finds planted label errors, beside cleanlab, and what
dropping or relabelling what it flags does to a model trained on the labels.

For each data set (Fashion-MNIST at 100 labels per class, the bundled sample) the
features of the training and test images are computed once through the default
feature cache (the bundled EfficientNet-Lite0 at its own 224 px). For each noise rate
and seed a known share of training labels is flipped to another class (uniformly), and:

- clean: `issues_from_features` (what `find_label_issues` runs after extraction);
- cleanlab: `cleanlab.filter.find_label_issues` on the same held-out probabilities
  clean's first pass computed (a plain k-fold probe: cleanlab's usual workflow), and
  on clean's final (second-pass) probabilities;
- precision, recall and F1 against the planted flips;
- test accuracy of the feature-extraction head (the L-BFGS linear probe on the cached
  features, at TrainConfig's default L2) trained on the noisy labels, on the labels
  with clean's flags dropped, with them relabelled to clean's suggestion, and on the
  true labels (the ceiling).

Run: PYTHONPATH=src .venv/bin/python bench/bench_clean.py [--rates 0.05,0.1,0.2]
     [--seeds 0,1,2] [--data fashion-mnist,sample]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from headstart.backbones.registry import create_backbone
from headstart.data.idx import load_fashion_mnist, load_sample
from headstart.data.split import sample_per_class
from headstart.evaluation.label_issues import find_label_issues, issues_from_features
from headstart.features.cache import FeatureCache, cached_features, default_cache_dir
from headstart.train.config import TrainConfig
from headstart.train.probe import fit_linear_probe


def datasets(names: list[str]):
    for name in names:
        if name == "fashion-mnist":
            train, test = load_fashion_mnist()
            yield (
                "Fashion-MNIST 100/class",
                sample_per_class(train, 100, seed=0),
                sample_per_class(test, 100, seed=0),
            )
        else:
            train, test = load_sample()
            yield "bundled sample", train, test


def flip(labels: np.ndarray, classes: int, rate: float, seed: int):
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[picked] = (labels[picked] + rng.integers(1, classes, size=len(picked))) % classes
    truth = np.zeros(len(labels), dtype=bool)
    truth[picked] = True
    return noisy, truth


def scores(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    hits = int((flagged & truth).sum())
    precision = hits / max(int(flagged.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)


def head_accuracy(x, y, keep, x_test, y_test, classes: int) -> float:
    probe = fit_linear_probe(x[keep], y[keep], classes, l2=TrainConfig().probe_l2)
    return probe.score(x_test, y_test)


def one_run(name, train, x, x_test, y_test, rate, seed, cleanlab_find):
    k = len(train.classes)
    noisy, truth = flip(train.labels, k, rate, seed)
    dataset = train.subset(np.arange(len(train)))
    dataset.labels = noisy
    found = issues_from_features(dataset, x)
    flagged = found.flagged()
    suggested = noisy.copy()
    for issue in found.label_issues:
        suggested[issue.index] = train.classes.index(issue.suggested)
    everyone = np.ones(len(noisy), dtype=bool)
    return {
        "data": name,
        "rate": rate,
        "seed": seed,
        "clean": scores(flagged, truth),
        "cleanlab_first": scores(cleanlab_find(noisy, found.first_probabilities), truth),
        "cleanlab_final": scores(cleanlab_find(noisy, found.probabilities), truth),
        "flagged": int(flagged.sum()),
        "outliers": sum(issue.kind == "outlier" for issue in found.issues),
        "acc_noisy": head_accuracy(x, noisy, everyone, x_test, y_test, k),
        "acc_dropped": head_accuracy(x, noisy, ~flagged, x_test, y_test, k),
        "acc_relabelled": head_accuracy(x, suggested, everyone, x_test, y_test, k),
        "acc_true": head_accuracy(x, train.labels, everyone, x_test, y_test, k),
    }


def mean(rows, key, index=None):
    values = [r[key] if index is None else r[key][index] for r in rows]
    return float(np.mean(values))


def print_tables(rows) -> None:
    print("\n| data | flipped | clean P / R / F1 | cleanlab, first-pass probs P / R / F1 | "
          "cleanlab, clean's final probs F1 | flagged | outliers |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    groups = {}
    for r in rows:
        groups.setdefault((r["data"], r["rate"]), []).append(r)
    for (name, rate), g in groups.items():
        c = " / ".join(f"{mean(g, 'clean', i):.3f}" for i in range(3))
        f = " / ".join(f"{mean(g, 'cleanlab_first', i):.3f}" for i in range(3))
        print(
            f"| {name} | {rate:.0%} | {c} | {f} | {mean(g, 'cleanlab_final', 2):.3f} | "
            f"{mean(g, 'flagged'):.1f} | {mean(g, 'outliers'):.1f} |"
        )
    print("\n| data | flipped | head on noisy labels | flags dropped | flags relabelled | "
          "true labels |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, rate), g in groups.items():
        cells = " | ".join(
            f"{100 * mean(g, key):.1f} %"
            for key in ("acc_noisy", "acc_dropped", "acc_relabelled", "acc_true")
        )
        print(f"| {name} | {rate:.0%} | {cells} |")
    print(f"\nper run F1 (clean - cleanlab first-pass): min "
          f"{min(r['clean'][2] - r['cleanlab_first'][2] for r in rows):+.3f}")  # fmt: skip


def main() -> None:
    from cleanlab.filter import find_label_issues as cleanlab_find

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.05,0.1,0.2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default="fashion-mnist,sample")
    args = parser.parse_args()
    torch.set_num_threads(1)  # L-BFGS on 1,000 rows: a second thread only contends
    backbone = create_backbone("tf_efficientnet_lite0", "auto")
    cache = FeatureCache(default_cache_dir())
    rows = []
    for name, train, test in datasets(args.data.split(",")):
        x = cached_features(backbone, train, cache, device="cpu")[0]["final"]
        x_test = cached_features(backbone, test, cache, device="cpu")[0]["final"]
        started = time.perf_counter()
        find_label_issues(train, device="cpu")  # the whole call, features from the cache
        print(f"{name}: find_label_issues on {len(train)} cached images in "
              f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
        for rate in (float(r) for r in args.rates.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                row = one_run(name, train, x, x_test, test.labels, rate, seed, cleanlab_find)
                rows.append(row)
                print(
                    f"  {rate:.0%} seed {seed}: clean F1 {row['clean'][2]:.3f}, cleanlab "
                    f"{row['cleanlab_first'][2]:.3f} / {row['cleanlab_final'][2]:.3f}; "
                    f"acc noisy {row['acc_noisy']:.3f} dropped {row['acc_dropped']:.3f} "
                    f"relabelled {row['acc_relabelled']:.3f}",
                    flush=True,
                )
    print_tables(rows)


if __name__ == "__main__":
    main()
