"""The per-image feature cache on the bundled sample: images extracted and seconds for

1. the first extraction of a split (an empty cache),
2. a second seed's split of the same folder (should extract nothing),
3. the folder with 10 new images (should extract those 10),
4. a 200-image subset (should extract nothing),

against a fresh extraction of the whole folder with an empty cache (what a miss costs),
and whether the rows served equal a fresh extraction bit for bit.

The "folder" is the sample's first 990 training images; the 10 new ones are the rest.

Run: PYTHONPATH=src .venv/bin/python bench/bench_cache.py [--image-size 112]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from headstart.backbones.registry import create_backbone
from headstart.data.idx import load_sample
from headstart.data.split import split_dataset
from headstart.features.cache import FeatureCache, cached_features
from headstart.features.extract import extract_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=112)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    train, _ = load_sample()
    folder = train.subset(range(990))
    backbone = create_backbone(image_size=args.image_size)
    backbone.model.reset_classifier(0)
    extract_features(backbone, folder.subset(range(64)))  # warm-up: oneDNN builds kernels
    rows = []
    with tempfile.TemporaryDirectory() as root:
        cache = FeatureCache(root)

        def run(what: str, dataset) -> dict:
            start = time.perf_counter()
            found, use = cached_features(backbone, dataset, cache)
            seconds = time.perf_counter() - start
            rows.append((what, len(dataset), use.extracted, use.from_cache, seconds))
            return found

        first_train, first_test = split_dataset(folder, test_size=0.2, seed=0)
        run("first extraction: split seed 0, train", first_train)
        run("first extraction: split seed 0, test", first_test)
        second_train, second_test = split_dataset(folder, test_size=0.2, seed=1)
        run("second seed: split seed 1, train", second_train)
        run("second seed: split seed 1, test", second_test)
        grown = run("the folder + 10 new images", train)
        run("a 200-image subset", train.subset(range(100, 300)))
        shards = len(cache.entries())
    start = time.perf_counter()
    fresh = extract_features(backbone, train)
    fresh_seconds = time.perf_counter() - start

    print(
        f"{backbone.name} at {args.image_size} px, {torch.get_num_threads()} threads, load "
        f"average {load:.2f} at the start; {shards} shards in the cache at the end\n"
    )
    print("| run | images | extracted | from the cache | seconds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for what, n, extracted, cached, seconds in rows:
        print(f"| {what} | {n:,} | {extracted:,} | {cached:,} | {seconds:.2f} |")
    print(
        f"| fresh extraction of all 1,000 (empty cache) | 1,000 | 1,000 | 0 | {fresh_seconds:.2f} |"
    )
    same = np.array_equal(grown["final"], fresh["final"])
    gap = float(np.abs(grown["final"] - fresh["final"]).max())
    print(
        f"\nfolder + 10 from the cache equals a fresh extraction bit for bit: {same} "
        f"(largest difference {gap:.3g})"
    )


if __name__ == "__main__":
    main()
