"""Prediction speed: ``predict_proba`` with and without the fast path, same model, same run.

A feature-extraction model fitted on the bundled Fashion-MNIST sample (bundled
EfficientNet-Lite0), then 1,000 test images predicted with the fast path (BatchNorm
folded, channels_last, bf16 autocast where the CPU has it; batched scaling) and in
plain fp32, interleaved three times each after a warm-up, best of three.

Run: .venv/bin/python bench/bench_predict.py [--image-size 112]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from headstart import ImageClassifier
from headstart.data.idx import load_sample
from headstart.strategies.registry import get_strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=112)
    args = parser.parse_args()
    train, test = load_sample()
    config = get_strategy("feature-extraction").default_config()
    config = config.replace(image_size=args.image_size)
    clf = ImageClassifier(strategy="feature-extraction", config=config).fit(train)
    configs = {"fp32": config.replace(fast=False), "fast": config}
    seconds: dict[str, list[float]] = {}
    probabilities = {}
    for arm in ("fp32", "fast") * 4:  # the first round warms up oneDNN
        clf.config_ = configs[arm]
        start = time.perf_counter()
        probabilities[arm] = clf.predict_proba(test)
        seconds.setdefault(arm, []).append(time.perf_counter() - start)
    fp32, fast = (len(test) / min(seconds[arm][1:]) for arm in ("fp32", "fast"))
    agree = probabilities["fast"].argmax(1) == probabilities["fp32"].argmax(1)
    print(
        json.dumps(
            {
                "images": len(test),
                "image_size": args.image_size,
                "fp32_images_per_s": round(fp32),
                "fast_images_per_s": round(fast),
                "speedup": round(fast / fp32, 2),
                "same_class": float(agree.mean()),
                "largest_probability_change": float(
                    np.abs(probabilities["fast"] - probabilities["fp32"]).max()
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
