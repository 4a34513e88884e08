"""Test-time augmentation: what each mode gains (accuracy, balanced accuracy) and costs
(prediction time per image, as a ratio to no TTA measured back to back).

A model is fitted per strategy on ``--labels-per-class`` images per class of the data
(Fashion-MNIST from Debian's dataset-fashion-mnist, or the bundled sample), with the
bundled EfficientNet-Lite0, then the test images are predicted once per TTA mode
(``none``, ``flip``, ``flip+crops``). Every mode runs the backbone on every image
(the feature cache is off while predicting: views are never cached, and the plain
prediction of a new image runs it too), so the ratios are the cost of the extra
forward passes. Timing is noisy on a shared CPU: besides the one full pass per mode,
``--timing-rounds`` rounds over the first ``--timing-images`` test images run the modes
back to back in a rotating order, and the median ratio of those rounds is reported.

Run: .venv/bin/python bench/bench_tta.py [--data fashion|sample] [--labels-per-class 100]
     [--strategies feature-extraction,fine-tune] [--test-images 0 (all)]
     [--image-size 112] [--timing-images 500] [--timing-rounds 3] [--threads 1]
     [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from headstart import ImageClassifier
from headstart.data.idx import load_fashion_mnist, load_sample
from headstart.data.split import sample_per_class
from headstart.estimator.tta import TTA_MODES
from headstart.features.cache import default_cache_dir
from headstart.strategies.registry import get_strategy
from headstart.train.metrics import classification_metrics


def fitted(strategy: str, train, image_size: int, epochs: int | None) -> ImageClassifier:
    config = get_strategy(strategy).default_config().replace(image_size=image_size)
    if epochs and strategy == "fine-tune":
        config = config.replace(epochs=epochs)
    clf = ImageClassifier(strategy=strategy, config=config, cache_dir=default_cache_dir())
    started = time.perf_counter()
    clf.fit(train)
    print(f"  {strategy}: fitted in {time.perf_counter() - started:.0f}s", flush=True)
    clf.cache_dir = None  # predicting runs the backbone, in every mode
    return clf


def measure(clf: ImageClassifier, test, args) -> dict:
    truth = test.labels
    warm = test.subset(np.arange(min(64, len(test))))
    for tta in TTA_MODES:  # the fast path's fold and check, oneDNN's first calls
        clf.predict_proba(warm, tta=tta)
    rows = {}
    for tta in TTA_MODES:  # one full pass per mode: accuracy, and a first timing
        started = time.perf_counter()
        proba = clf.predict_proba(test, tta=tta)
        seconds = time.perf_counter() - started
        metrics = classification_metrics(truth, proba.argmax(1), clf.classes_)
        rows[tta] = {
            "views": clf.tta_views(tta),
            "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "full_pass_ms_per_image": 1000 * seconds / len(test),
        }
        print(f"    {tta}: {metrics['accuracy']:.2%} in {seconds:.0f}s", flush=True)
    part = test.subset(np.arange(min(args.timing_images, len(test))))
    ratios: dict[str, list[float]] = {tta: [] for tta in TTA_MODES}
    for round_ in range(args.timing_rounds):
        order = TTA_MODES[round_ % 3 :] + TTA_MODES[: round_ % 3]
        seconds = {}
        for tta in order:
            started = time.perf_counter()
            clf.predict_proba(part, tta=tta)
            seconds[tta] = time.perf_counter() - started
        for tta in TTA_MODES:
            ratios[tta].append(seconds[tta] / seconds["none"])
    base = rows["none"]
    for tta in TTA_MODES:
        row = rows[tta]
        row["gain_points"] = 100 * (row["accuracy"] - base["accuracy"])
        row["balanced_gain_points"] = 100 * (row["balanced_accuracy"] - base["balanced_accuracy"])
        row["full_pass_time_ratio"] = row["full_pass_ms_per_image"] / base["full_pass_ms_per_image"]
        row["time_ratio_rounds"] = ratios[tta]
        row["time_ratio_median"] = statistics.median(ratios[tta])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("fashion", "sample"), default="fashion")
    parser.add_argument("--labels-per-class", type=int, default=100)
    parser.add_argument("--strategies", default="feature-extraction")
    parser.add_argument("--test-images", type=int, default=0, help="0: all of them")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--fine-tune-epochs", type=int)
    parser.add_argument("--timing-images", type=int, default=500)
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: on a shared CPU, two spin)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_fashion_mnist() if args.data == "fashion" else load_sample()
    train = sample_per_class(train, args.labels_per_class, seed=args.seed)
    if args.test_images:
        test = sample_per_class(test, args.test_images // len(test.classes), seed=args.seed)
    print(f"{args.data}: {len(train)} training, {len(test)} test images", flush=True)
    results = {"settings": vars(args) | {"out": str(args.out)}, "test_images": len(test)}
    for strategy in args.strategies.split(","):
        clf = fitted(strategy, train, args.image_size, args.fine_tune_epochs)
        results[strategy] = measure(clf, test, args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
