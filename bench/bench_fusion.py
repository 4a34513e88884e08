"""The CPU fast path before and after fusing activations into convolutions and running
loader batches in slices of about a million pixels (docs/BENCHMARKS.md section 20).

For each (backbone, size) the ranking and the budget use, ``extract_features`` over the
same bundled sample images, batch 64, four ways in the same process, interleaved, best
of --repeats after a warm-up: before (BatchNorm folded, whole batches: the previous fast
path), fused only, slices only, both (what headstart now does). The features of "both"
are compared with "before" (largest absolute difference, relative to the largest value).

Run: PYTHONPATH=src .venv/bin/python bench/bench_fusion.py [--images 256] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import headstart.features.fastpath as fastpath
from headstart.backbones.registry import create_backbone
from headstart.data.idx import load_sample
from headstart.features.extract import extract_features

PAIRS = [("tf_efficientnet_lite0", 112), ("tf_efficientnet_lite0", 224),
         ("tf_efficientnet_lite1", 120), ("tf_efficientnet_lite1", 240),
         ("tf_efficientnet_lite2", 130), ("tf_efficientnet_lite2", 260)]  # fmt: skip
LAYERS = ["stage-3", "stage-2", "stage-1", "final",
          "stage-3_2x2", "stage-2_2x2", "stage-1_2x2", "final_2x2"]  # fmt: skip
WAYS = {"before": (False, False), "fused": (True, False), "slices": (False, True),
        "both": (True, True)}  # fmt: skip


def extract_way(backbone, images, fused: bool, sliced: bool) -> tuple[float, dict]:
    available, pixels = fastpath.fusion_available, fastpath.MICRO_BATCH_PIXELS
    try:
        if not fused:
            fastpath.fusion_available = lambda device: False
        if not sliced:
            fastpath.MICRO_BATCH_PIXELS = 1 << 40
        began = time.perf_counter()
        features = extract_features(backbone, images, layers=LAYERS, batch_size=64)
        return time.perf_counter() - began, features
    finally:
        fastpath.fusion_available, fastpath.MICRO_BATCH_PIXELS = available, pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-fusion.json"))
    args = parser.parse_args()
    train, _ = load_sample()
    images = train.subset(list(range(args.images)))
    warm = train.subset(list(range(16)))
    rows = []
    for name, size in PAIRS:
        backbone = create_backbone(name, "auto", image_size=size)
        seconds = {way: [] for way in WAYS}
        features = {}
        for way, (fused, sliced) in WAYS.items():
            extract_way(backbone, warm, fused, sliced)
        for _ in range(args.repeats):
            for way, (fused, sliced) in WAYS.items():
                took, features[way] = extract_way(backbone, images, fused, sliced)
                seconds[way].append(took)
        diff = max(float(np.abs(features["both"][k] - features["before"][k]).max()) for k in LAYERS)
        scale = max(float(np.abs(features["before"][k]).max()) for k in LAYERS)
        row = {
            "backbone": name,
            "image_size": size,
            "images": args.images,
            "img_per_s": {w: args.images / min(s) for w, s in seconds.items()},
            "seconds": seconds,
            "speed_up_both": min(seconds["before"]) / min(seconds["both"]),
            "max_abs_difference": diff,
            "relative_difference": diff / scale,
        }
        rows.append(row)
        ips = row["img_per_s"]
        print(f"{name} {size}: " + ", ".join(f"{w} {v:.0f} img/s" for w, v in ips.items())
              + f"; both/before {row['speed_up_both']:.2f}x; max |diff| {diff:.3g}",
              flush=True)  # fmt: skip
    out = {
        "command": "PYTHONPATH=src .venv/bin/python bench/bench_fusion.py",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
