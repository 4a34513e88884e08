"""Ground truth for `headstart rank` (issue 14): rank the candidates on each dataset's
training images, then train every candidate for real (a linear probe on all the
training features, scored on held-out test images) and compare.

Per dataset: weighted Kendall tau (scipy.stats.weightedtau, its default: additive
hyperbolic weigher 1/(r+1), rank=True, i.e. the mean of the weighted taus with
importance by the true order and by the predicted order) between predicted and true
accuracy, plain Kendall tau-b, the chosen candidate's true accuracy against the best's,
and the cost of the ranking against the cost of training every candidate's probe.

Datasets (all offline):
  sample    the bundled Fashion-MNIST sample: its 1,000 training / 1,000 test images
  fmnist10  Fashion-MNIST (Debian's dataset-fashion-mnist) train, 10 per class, seed 0;
            tested on 100 per class of its test split (seed 0), 1,000 images
  fmnist100 the same at 100 per class (the draws are nested); fmnist100:1 draws with
            seed 1; --fmnist-test-per-class 1000 tests on the whole test split
  digits    scikit-learn's digits (1,797 8x8 images, 0..16 scaled to 0..255 uint8),
            split stratified in half, seed 0

Each dataset ranks into a fresh, empty feature cache under --work, so the ranking's
times include extraction; the probes that give the truth then read the training
features from that cache (their extraction is counted once, from the ranking's).
Test features go to a separate cache: they are what evaluates, not what trains.

Run: PYTHONPATH=src .venv/bin/python bench/bench_rank.py [--datasets sample,fmnist10,...]
        [--out /tmp/bench-rank.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, weightedtau

from headstart.backbones.registry import create_backbone
from headstart.data.arrays import from_arrays
from headstart.data.idx import load_fashion_mnist, load_sample
from headstart.data.split import sample_per_class, split_dataset
from headstart.features.cache import FeatureCache, cached_features
from headstart.rank import candidates_for, rank
from headstart.train.probe import fit_linear_probe

BACKBONES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
NATIVE = dict(zip(BACKBONES, (224, 240, 260), strict=True))


def load(name: str, test_per_class: int):
    if name == "sample":
        return load_sample()
    if name.startswith("fmnist"):  # fmnist<k>[:<seed>]
        per_class, _, seed = name[6:].partition(":")
        train, test = load_fashion_mnist()
        if test_per_class < 1000:
            test = sample_per_class(test, test_per_class, seed=0)
        return sample_per_class(train, int(per_class), seed=int(seed or 0)), test
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.round(d.images * (255 / 16)).astype(np.uint8)
        return split_dataset(from_arrays(images, d.target), test_size=0.5, seed=0)
    raise SystemExit(f"unknown dataset {name!r}")


def run(name: str, work: Path, sizes: list[int] | None, test_per_class: int,
        methods: list[str]) -> tuple[list[dict], dict | None]:  # fmt: skip
    """Each of ``methods`` ranks the dataset from its own empty cache, one after the
    other (interleaved per dataset, so both see the same load); then the truth, once."""
    train, test = load(name, test_per_class)
    candidates = candidates_for(BACKBONES, sizes, native_sizes=NATIVE)
    folder = work / name.replace(":", "-")
    rankings, caches = {}, {}
    for method in methods:
        caches[method] = FeatureCache(folder / f"rank-cache-{method}")  # empty: main clears
        print(f"== {name} ({method}): {len(train)} train / {len(test)} test, "
              f"{len(candidates)} candidates", flush=True)  # fmt: skip
        rankings[method] = rank(train, candidates, cache=caches[method], method=method,
                                notice=lambda t: print("  ", t, flush=True))  # fmt: skip
        print(rankings[method].format(), flush=True)
    # The truth: a probe on all the training features of each candidate, on the test set.
    # Its training features come from full's cache (halving extracted only some images).
    truth_cache = caches.get("full") or FeatureCache(folder / "truth-cache")
    test_cache = FeatureCache(work / "test-cache")
    true, halves, fit_seconds, test_seconds = {}, {}, 0.0, {}
    for backbone_name, size in dict.fromkeys((c.backbone, c.image_size) for c in candidates):
        backbone = create_backbone(backbone_name, "auto", image_size=size)
        members = [c for c in candidates if (c.backbone, c.image_size) == (backbone_name, size)]
        layers = list(dict.fromkeys(layer for c in members for layer in c.layers))
        ftr, _ = cached_features(backbone, train, truth_cache, layers=layers)
        began = time.perf_counter()
        fte, _ = cached_features(backbone, test, test_cache, layers=layers)
        test_seconds[(backbone_name, size)] = time.perf_counter() - began
        for c in members:
            xtr = np.concatenate([ftr[layer] for layer in c.layers], axis=1)
            xte = np.concatenate([fte[layer] for layer in c.layers], axis=1)
            began = time.perf_counter()
            probe = fit_linear_probe(xtr, train.labels, len(train.classes))
            fit_seconds += time.perf_counter() - began
            right = probe.predict_proba(xte).argmax(1) == test.labels
            true[c] = float(right.mean())
            halves[c] = [float(right[0::2].mean()), float(right[1::2].mean())]
    out = []
    for method, ranking in rankings.items():
        out.append(summarise(name, method, ranking, train, test, true, halves, fit_seconds))
    if "full" in rankings and "halving" in rankings:
        return out, compare(name, rankings["full"], rankings["halving"], out)
    return out, None


def summarise(name, method, ranking, train, test, true, halves, fit_seconds) -> dict:
    """One method's ranking against the truth."""
    rows = []
    for s in ranking.ranked:
        row = s.to_dict()
        row["true_accuracy"] = true[s.candidate]
        row["true_accuracy_halves"] = halves[s.candidate]
        rows.append(row)
    # The ranking's own order (its position: halving's scores of candidates dropped in
    # different rounds are z-scores among different sets, so only the order compares).
    predicted = -np.arange(len(rows), dtype=float)
    truth = np.array([r["true_accuracy"] for r in rows])
    chosen = rows[0]
    extraction = {(r["candidate"]["backbone"], r["candidate"]["image_size"]):
                  r["extraction_seconds"] for r in rows}  # fmt: skip
    out = {
        "dataset": name,
        "method": method,
        "train_images": len(train),
        "test_images": len(test),
        "candidates": len(rows),
        "weighted_tau": float(weightedtau(truth, predicted)[0]),
        "kendall_tau": float(kendalltau(truth, predicted)[0]),
        "weighted_tau_test_halves": float(
            weightedtau(
                [r["true_accuracy_halves"][0] for r in rows],
                [r["true_accuracy_halves"][1] for r in rows],
            )[0]
        ),  # fmt: skip
        "weighted_tau_logme": float(weightedtau(truth, [r["logme"] for r in rows])[0]),
        "weighted_tau_knn": float(weightedtau(truth, [r["knn_accuracy"] for r in rows])[0]),
        "chosen": chosen["candidate"]["name"],
        "chosen_true": chosen["true_accuracy"],
        "best": max(rows, key=lambda r: r["true_accuracy"])["candidate"]["name"],
        "best_true": float(truth.max()),
        "gap_points": 100 * float(truth.max() - chosen["true_accuracy"]),
        "ranking_seconds": ranking.seconds,
        "extraction_seconds": sum(extraction.values()),
        "probe_fit_seconds": fit_seconds,
        "train_all_probes_seconds": sum(extraction.values()) + fit_seconds,
        "notes": ranking.notes,
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1), flush=True)
    return out


def compare(name, full, halving, results) -> dict:
    """Halving against full: time ratio, both weighted taus, the picks' accuracy."""
    by_method = {r["method"]: r for r in results}
    position = {s.candidate: i for i, s in enumerate(halving.ranked)}
    ordered = [s.candidate for s in full.ranked]
    out = {
        "dataset": name,
        "method": "halving vs full",
        "time_ratio": halving.seconds / full.seconds,
        "weighted_tau_full": by_method["full"]["weighted_tau"],
        "weighted_tau_halving": by_method["halving"]["weighted_tau"],
        "weighted_tau_difference": by_method["halving"]["weighted_tau"]
        - by_method["full"]["weighted_tau"],
        # halving's order against full's (full's position as the reference)
        "weighted_tau_halving_vs_full": float(
            weightedtau(-np.arange(len(ordered), dtype=float), [-position[c] for c in ordered])[0]
        ),  # fmt: skip
        "pick_full": by_method["full"]["chosen"],
        "pick_halving": by_method["halving"]["chosen"],
        "pick_accuracy_difference_points": 100
        * (by_method["halving"]["chosen_true"] - by_method["full"]["chosen_true"]),
    }
    print(json.dumps(out, indent=1), flush=True)
    return out


def short(name: str) -> str:
    return name.replace("tf_efficientnet_lite", "Lite").replace(
        "stage-3+stage-2+stage-1+final", "4 stages"
    )


def markdown(results: dict) -> str:
    """The summary table and each dataset's rows, as Markdown."""
    lines = [
        "| dataset | method | train / test | weighted τ | Kendall τ | test halves wτ "
        "| wτ LogME | wτ kNN "
        "| chosen (true) | best (true) | gap | ranking | train all probes |",
        "| --- | --- | --- | --: | --: | --: | --: | --: | --- | --- | --: | --: | --: |",
    ]
    for r in results["datasets"]:
        halves = r.get("weighted_tau_test_halves", float("nan"))
        chosen = f"{short(r['chosen'])} ({r['chosen_true']:.1%})"
        best = f"{short(r['best'])} ({r['best_true']:.1%})"
        lines.append(
            f"| {r['dataset']} | {r.get('method', 'full')} "
            f"| {r['train_images']} / {r['test_images']} "
            f"| {r['weighted_tau']:.2f} | {r['kendall_tau']:.2f} | {halves:.2f} "
            f"| {r['weighted_tau_logme']:.2f} | {r['weighted_tau_knn']:.2f} | {chosen} | {best} "
            f"| {r['gap_points']:.1f} pt | {r['ranking_seconds']:.0f} s "
            f"| {r['train_all_probes_seconds']:.0f} s |"
        )
    if results.get("comparisons"):
        lines += [
            "",
            "| dataset | halving / full time | wτ full | wτ halving | wτ halving vs full order "
            "| pick full | pick halving | pick difference |",
            "| --- | --: | --: | --: | --: | --- | --- | --: |",
        ]
        for c in results["comparisons"]:
            lines.append(
                f"| {c['dataset']} | {c['time_ratio']:.2f} | {c['weighted_tau_full']:.2f} "
                f"| {c['weighted_tau_halving']:.2f} | {c['weighted_tau_halving_vs_full']:.2f} "
                f"| {short(c['pick_full'])} | {short(c['pick_halving'])} "
                f"| {c['pick_accuracy_difference_points']:+.1f} pt |"
            )
    draws: dict[str, list[dict]] = {}  # fmnist<k> -> its seeded draws
    for r in results["datasets"]:
        if r["dataset"].startswith("fmnist"):
            draws.setdefault(r["dataset"].partition(":")[0], []).append(r)
    for k, runs in draws.items():
        if len(runs) < 2:
            continue
        truths = [
            {row["candidate"]["name"]: row["true_accuracy"] for row in r["rows"]} for r in runs
        ]
        names = sorted(truths[0])
        pairs = []
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                tau = weightedtau([truths[i][n] for n in names], [truths[j][n] for n in names])[0]
                pairs.append(f"{runs[i]['dataset']} vs {runs[j]['dataset']} {tau:.2f}")
        lines += [
            "",
            f"{k}: weighted τ between the true accuracies of two draws: " + ", ".join(pairs),
        ]
    for r in results["datasets"]:
        lines += [
            "",
            f"{r['dataset']}: predicted (CV probe) against true, best true first",
            "",
            "| candidate | predicted | true | LogME | kNN |",
            "| --- | --: | --: | --: | --: |",
        ]
        for row in sorted(r["rows"], key=lambda row: -row["true_accuracy"]):
            lines.append(
                f"| {short(row['candidate']['name'])} | {row['predicted_accuracy']:.1%} "
                f"| {row['true_accuracy']:.1%} | {row['logme']:.3f} | {row['knn_accuracy']:.1%} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="fmnist10,digits,sample,fmnist100")
    parser.add_argument(
        "--fmnist-test-per-class",
        type=int,
        default=100,
        help="Fashion-MNIST test images per class (1000: the whole test split)",
    )
    parser.add_argument(
        "--methods",
        default="halving,full",
        help="rank methods, each from an empty cache, in this order per dataset",
    )
    parser.add_argument("--sizes", default="", help="comma-separated; default native+half")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-rank"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-rank.json"))
    parser.add_argument("--table", type=Path, help="only print the Markdown of a saved --out")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return
    shutil.rmtree(args.work, ignore_errors=True)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    results = {"machine": f"{platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} cores", "load_average_at_start": os.getloadavg(),
               "datasets": [], "comparisons": []}  # fmt: skip
    for name in args.datasets.split(","):
        rows, comparison = run(name, args.work, sizes, args.fmnist_test_per_class,
                               args.methods.split(","))  # fmt: skip
        results["datasets"] += rows
        results["comparisons"] += [comparison] if comparison else []
        results["load_average_at_end"] = os.getloadavg()
        args.out.write_text(json.dumps(results, indent=1, default=str))
    for r in results["datasets"]:
        print(f"{r['dataset']:>9} {r['method']:>7}  wtau {r['weighted_tau']:+.3f}  "
              f"tau {r['kendall_tau']:+.3f}  "
              f"gap {r['gap_points']:.1f} pt  rank {r['ranking_seconds']:.0f}s  "
              f"train-all-probes {r['train_all_probes_seconds']:.0f}s")  # fmt: skip
    print(markdown(results))


if __name__ == "__main__":
    main()
