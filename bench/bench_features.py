"""Two feature-extraction benchmarks on the bundled Fashion-MNIST sample.

1. Cache vs recompute: a linear head trained for 10 epochs (AdamW, same init, same
   batch order) on features computed once, against the same head trained the way the
   Keras guide and the PyTorch fine-tuning tutorial do it: the frozen base run on
   every batch of every epoch (fp32 eager). Target: >= 10x faster, accuracy within
   0.3 points.
2. Fast path vs plain fp32 eager timm: images/s of ``extract_features`` with and
   without the fast path (BatchNorm folded into the convolutions, channels_last,
   bf16 autocast), in the same run; then the forward pass alone, with bf16 both
   without and with the folding. Target: >= 3x on a CPU with AVX-512 BF16 / AMX.

Run: .venv/bin/python bench/bench_features.py [--image-size 112] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from headstart.backbones.registry import create_backbone
from headstart.data.dataset import TorchImageDataset
from headstart.data.idx import load_sample
from headstart.features.extract import extract_features
from headstart.features.fastpath import (
    FOLD_CHECK_IMAGES,
    fast_path_available,
    fold_batchnorm,
    split_transform,
)


def train_head(
    batches_of_features, num_features: int, labels_per_batch, epochs: int, seed: int
) -> nn.Linear:
    torch.manual_seed(seed)
    head = nn.Linear(num_features, 10)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    for epoch in range(epochs):
        for features, labels in zip(
            batches_of_features(epoch), labels_per_batch(epoch), strict=True
        ):
            loss = nn.functional.cross_entropy(head(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head


def batch_orders(n: int, batch_size: int, epochs: int, seed: int) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=generator).split(batch_size) for _ in range(epochs)]


def accuracy(head: nn.Linear, features: torch.Tensor, labels: np.ndarray) -> float:
    with torch.no_grad():
        return float((head(features).argmax(1).numpy() == labels).mean())


def bench_cache(image_size: int, epochs: int, batch_size: int) -> dict:
    train, test = load_sample()
    backbone = create_backbone(image_size=image_size)
    backbone.model.reset_classifier(0)
    orders = batch_orders(len(train), batch_size, epochs, seed=0)
    labels = torch.as_tensor(train.labels)

    # headstart: the frozen base once (fast path), the head on the cached features
    start = time.perf_counter()
    cached = torch.from_numpy(extract_features(backbone, train)["final"])
    head = train_head(
        lambda e: (cached[idx] for idx in orders[e]),
        cached.shape[1],
        lambda e: (labels[idx] for idx in orders[e]),
        epochs,
        seed=0,
    )
    cached_seconds = time.perf_counter() - start

    # the tutorials: the frozen base on every batch of every epoch (fp32 eager)
    transform = backbone.preprocessing.transform(training=False)
    images = TorchImageDataset(train, transform)
    model = backbone.model.eval()

    def recomputed(epoch: int):
        for idx in orders[epoch]:
            batch = torch.stack([images[i][0] for i in idx.tolist()])
            with torch.no_grad():
                features = model(batch)
            yield features

    start = time.perf_counter()
    head_slow = train_head(
        recomputed, cached.shape[1], lambda e: (labels[idx] for idx in orders[e]), epochs, seed=0
    )
    recompute_seconds = time.perf_counter() - start

    test_fast = torch.from_numpy(extract_features(backbone, test)["final"])
    test_fp32 = torch.from_numpy(extract_features(backbone, test, fast=False)["final"])
    return {
        "images": len(train),
        "epochs": epochs,
        "image_size": image_size,
        "cached_seconds": cached_seconds,
        "recompute_seconds": recompute_seconds,
        "speedup": recompute_seconds / cached_seconds,
        "cached_accuracy": accuracy(head, test_fast, test.labels),
        "recompute_accuracy": accuracy(head_slow, test_fp32, test.labels),
    }


def bench_fast_path(image_size: int, images: int, batch_size: int) -> dict:
    train, _ = load_sample()
    subset = train.subset(range(images))
    backbone = create_backbone(image_size=image_size)
    backbone.model.reset_classifier(0)
    for fast in (False, True):  # warm-up: oneDNN builds its kernels on first use
        extract_features(backbone, subset, batch_size=batch_size, fast=fast)
    timings = {}
    for fast in (False, True) * 3:  # interleaved: the machine's state affects both alike
        start = time.perf_counter()
        extract_features(backbone, subset, batch_size=batch_size, fast=fast)
        seconds = time.perf_counter() - start
        timings.setdefault(fast, []).append(seconds)
    fp32 = images / min(timings[False])
    fast_rate = images / min(timings[True])

    # Where the time goes: the same forward pass on already-preprocessed tensors,
    # and preprocessing alone (decode, resize, crop, normalise on the main thread).
    transform = backbone.preprocessing.transform(training=False)
    start = time.perf_counter()
    tensors = torch.stack([transform(subset.image(i)) for i in range(images)])
    preprocess_rate = images / (time.perf_counter() - start)
    geometry, finish = split_transform(transform)  # the fast path's: scaling per batch
    start = time.perf_counter()
    for first in range(0, images, batch_size):
        finish([(geometry(subset.image(i)), 0) for i in range(first, first + batch_size)])
    fast_preprocess_rate = images / (time.perf_counter() - start)
    model = backbone.model.eval()
    sample = torch.randn(FOLD_CHECK_IMAGES, *tensors.shape[1:])
    folded, folds = fold_batchnorm(model, sample)
    arms = {  # fp32 eager; the fast path without and with BatchNorm folding
        "fp32": (model, False),
        "bf16": (copy.deepcopy(model).to(memory_format=torch.channels_last), True),
        "fast": (  # a copy either way: the fp32 arm must keep its own layout
            (folded if folded is not model else copy.deepcopy(model)).to(
                memory_format=torch.channels_last
            ),
            True,
        ),
    }
    forward: dict[str, list[float]] = {}
    for _ in range(3):
        for arm, (net, fast) in arms.items():
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=fast):
                for batch in tensors.split(batch_size):
                    if fast:
                        batch = batch.contiguous(memory_format=torch.channels_last)
                    net.forward_head(net.forward_features(batch), pre_logits=True)
            forward.setdefault(arm, []).append(time.perf_counter() - start)
    return {
        "images": images,
        "image_size": image_size,
        "batch_size": batch_size,
        "fast_path_available": fast_path_available(torch.device("cpu")),
        "fp32_images_per_s": fp32,
        "fast_images_per_s": fast_rate,
        "speedup": fast_rate / fp32,
        "batchnorm_folded": folds,
        "forward_only_fp32_images_per_s": images / min(forward["fp32"]),
        "forward_only_bf16_unfolded_images_per_s": images / min(forward["bf16"]),
        "forward_only_fast_images_per_s": images / min(forward["fast"]),
        "forward_only_speedup": min(forward["fp32"]) / min(forward["fast"]),
        "preprocess_images_per_s": preprocess_rate,
        "fast_preprocess_images_per_s": fast_preprocess_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--skip-cache", action="store_true", help="only the fast-path benchmark")
    args = parser.parse_args()
    machine = {
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    fast = bench_fast_path(args.image_size, images=512, batch_size=64)
    print(json.dumps(fast, indent=2), flush=True)
    if args.skip_cache:
        return
    cache = bench_cache(args.image_size, args.epochs, batch_size=32)
    print(json.dumps(cache, indent=2), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "fast_path": fast, "cache": cache}
    (args.out / "features.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
