"""Prediction speed: ``predict_proba`` with and without the fast path, same model, same run.

A feature-extraction model fitted on the bundled Fashion-MNIST sample (bundled
EfficientNet-Lite0), then 1,000 test images predicted with the fast path (BatchNorm
folded, channels_last, bf16 autocast where the CPU has it; batched scaling) and in
plain fp32, interleaved three times each after a warm-up, best of three.

A third arm, "fast_unchecked", is the fast path without its fp32 recheck of close rows
(faithful_logits, issue 21): the recheck's cost is fast_unchecked against fast.
``--low-margin`` shrinks the fitted head's weights 100-fold first, so that most rows
have top classes within bf16's reach of each other (the hard case for the recheck).

Run: .venv/bin/python bench/bench_predict.py [--image-size 112] [--low-margin]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from headstart import ImageClassifier
from headstart.data.idx import load_sample
from headstart.estimator import image_classifier as image_classifier_module
from headstart.strategies.registry import get_strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--low-margin", action="store_true", help="a head 100x smaller")
    args = parser.parse_args()
    train, test = load_sample()
    config = get_strategy("feature-extraction").default_config()
    config = config.replace(image_size=args.image_size)
    clf = ImageClassifier(strategy="feature-extraction", config=config).fit(train)
    if args.low_margin:
        with torch.no_grad():
            for parameter in clf.model_.head.parameters():
                parameter.mul_(0.01)
    configs = {"fp32": config.replace(fast=False), "fast": config, "fast_unchecked": config}
    checked = image_classifier_module.faithful_logits
    seconds: dict[str, list[float]] = {}
    probabilities = {}
    for arm in ("fp32", "fast", "fast_unchecked") * 4:  # the first round warms up oneDNN
        clf.config_ = configs[arm]
        image_classifier_module.faithful_logits = (
            checked if arm == "fast" else (lambda logits, *_: logits)
        )
        start = time.perf_counter()
        probabilities[arm] = clf.predict_proba(test)
        seconds.setdefault(arm, []).append(time.perf_counter() - start)
    image_classifier_module.faithful_logits = checked
    rate = {arm: len(test) / min(times[1:]) for arm, times in seconds.items()}
    fp32, fast = rate["fp32"], rate["fast"]
    agree = probabilities["fast"].argmax(1) == probabilities["fp32"].argmax(1)
    unchecked = probabilities["fast_unchecked"].argmax(1) == probabilities["fp32"].argmax(1)
    order = np.argsort(-probabilities["fp32"], axis=1, kind="stable")[:, :3]
    print(
        json.dumps(
            {
                "images": len(test),
                "image_size": args.image_size,
                "fp32_images_per_s": round(fp32),
                "fast_images_per_s": round(fast),
                "fast_unchecked_images_per_s": round(rate["fast_unchecked"]),
                "speedup": round(fast / fp32, 2),
                "low_margin": args.low_margin,
                "same_class": float(agree.mean()),
                "same_class_unchecked": float(unchecked.mean()),
                "same_top3_order": float(
                    (np.argsort(-probabilities["fast"], axis=1, kind="stable")[:, :3] == order)
                    .all(1)
                    .mean()
                ),
                "same_top3_order_unchecked": float(
                    (
                        np.argsort(-probabilities["fast_unchecked"], axis=1, kind="stable")[:, :3]
                        == order
                    )
                    .all(1)
                    .mean()
                ),
                "largest_probability_change": float(
                    np.abs(probabilities["fast"] - probabilities["fp32"]).max()
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
