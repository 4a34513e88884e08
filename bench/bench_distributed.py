"""Distributed training and extraction on torchrun, and a 100,000-image folder on one machine.

Three measurements (issue 15):

1. ``extract``: feature extraction (``cached_features``, empty cache) over N images of the
   bundled sample at 1 and 2 processes (``torchrun --standalone``, gloo): images/s and the
   scaling efficiency (speed-up / processes).
2. ``fine-tune``: a fine-tuning epoch (the second of two; batch 32, 112 px, no augmentation)
   at 1 and 2 processes (DDP, gloo): images/s.
3. ``large-folder``: writes 100,000 small PNGs (Fashion-MNIST, 28 px) to a temporary
   folder, loads it with ``load_folder`` (every file read, hashed and decode-checked) in a
   fresh process, reports images/s and the peak RSS of that process, then deletes the folder.

Run: PYTHONPATH=src .venv/bin/python bench/bench_distributed.py
     [--only extract,fine-tune,large-folder] [--images 512]
Three ways to use the two cores, each timed: 1 process with 1 intra-op thread (the unit
the scaling efficiency is measured against), 1 process with 2 threads (what one process
does with the whole machine), 2 processes with 1 thread each (torchrun's default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


# --------------------------------------------------------------- the 100,000 images


def write_large_folder(root: Path, count: int) -> float:
    """``count`` PNGs of Fashion-MNIST (train, then test, cycled) in 10 class folders."""

    from headstart.data.idx import load_fashion_mnist

    train, test = load_fashion_mnist()
    started = time.perf_counter()
    sets = [train, test]
    for number in range(count):
        data = sets[0] if number < len(train) else sets[1]
        index = number % len(train) if number < len(train) else (number - len(train)) % len(test)
        image = data.image(index)
        label = data.classes[int(data.labels[index])].replace("/", "-")
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{number:06d}.png")
    return time.perf_counter() - started


def _memory_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, in KiB. Not ``ru_maxrss``: Linux
    carries that across ``exec`` from the parent, which here held Fashion-MNIST."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def load_worker(folder: str) -> None:
    """In a fresh process: import, note the RSS, load the folder, report."""
    from headstart.data.loaders import load_folder

    before = _memory_kib("VmRSS")
    started = time.perf_counter()
    dataset = load_folder(folder)
    seconds = time.perf_counter() - started
    peak = _memory_kib("VmHWM")
    print(
        json.dumps(
            {
                "images": len(dataset),
                "skipped": len(dataset.report.skipped),
                "seconds": seconds,
                "images_per_s": len(dataset) / seconds,
                "rss_before_load_mib": before / 1024,
                "peak_rss_mib": peak / 1024,
            }
        )
    )


def large_folder(count: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="headstart-100k-", dir="/tmp"))
    try:
        written = write_large_folder(root, count)
        size = sum(p.stat().st_size for p in root.rglob("*.png"))
        done = subprocess.run(
            [sys.executable, str(HERE), "--load-worker", str(root)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(write_seconds=written, folder_mib=size / 2**20)
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------ extraction, fine-tuning


def timed_worker(task: str, images: int, out: str) -> None:
    """Under torchrun (or alone): time ``task`` on ``images`` sample images; rank 0 writes."""
    import torch

    from headstart.backbones.registry import create_backbone
    from headstart.data.idx import load_sample
    from headstart.estimator.image_classifier import ImageClassifier
    from headstart.features.cache import cached_features
    from headstart.parallel import init_distributed, world
    from headstart.train.config import TrainConfig

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    init_distributed()
    train, _ = load_sample()
    data = train.subset(range(images))
    if task == "extract":
        backbone = create_backbone(image_size=112)
        backbone.model.reset_classifier(0)
        cached_features(backbone, data.subset(range(32)), None)  # warm-up (oneDNN kernels)
        torch.distributed.barrier() if world().size > 1 else None
        started = time.perf_counter()
        cached_features(backbone, data, None)
        seconds = time.perf_counter() - started
    else:
        # Two epochs, the second timed (the first builds oneDNN kernels and DDP's buckets);
        # no hold-out, so an epoch's seconds are training steps only.
        config = TrainConfig(
            epochs=2, image_size=112, batch_size=32, augment=False, validation_fraction=0.0,
            patience=0, freeze_groups=2, lp_ft=False,
        )  # fmt: skip
        clf = ImageClassifier("tf_efficientnet_lite0", "fine-tune", config)
        clf.fit(data)
        seconds = clf.history_[-1]["seconds"]
    if world().rank == 0:
        Path(out).write_text(json.dumps({"seconds": seconds, "images_per_s": images / seconds}))


def timed(task: str, images: int, processes: int, threads: int) -> dict:
    """``processes`` processes of ``threads`` intra-op threads each."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "result.json")
        worker = [str(HERE), "--timed-worker", task, str(images), out]
        if processes == 1:
            command = [sys.executable, *worker]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += ["--nproc-per-node", str(processes), *worker]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="extract,fine-tune,large-folder")
    parser.add_argument("--images", type=int, default=512, help="images for extract/fine-tune")
    parser.add_argument("--large-count", type=int, default=100_000)
    parser.add_argument("--load-worker", help=argparse.SUPPRESS)
    parser.add_argument("--timed-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        return load_worker(args.load_worker)
    if args.timed_worker:
        task, images, out = args.timed_worker
        return timed_worker(task, int(images), out)
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    for task in ("extract", "fine-tune"):
        if task not in args.only:
            continue
        runs = {
            "1 process x 1 thread": timed(task, args.images, 1, 1),
            "1 process x 2 threads": timed(task, args.images, 1, 2),
            "2 processes x 1 thread": timed(task, args.images, 2, 1),
        }
        base = runs["1 process x 1 thread"]["images_per_s"]
        for name, run in runs.items():
            speedup = run["images_per_s"] / base
            print(
                f"{task}: {args.images} images, {name}: {run['images_per_s']:.1f} img/s "
                f"({run['seconds']:.2f} s), {speedup:.2f}x one thread"
            )
    if "large-folder" in args.only:
        result = large_folder(args.large_count)
        print("large folder: " + json.dumps(result))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
