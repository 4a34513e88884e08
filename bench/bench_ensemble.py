"""Issue 14's accuracy target: `headstart train --backbone auto --ensemble K` on
Fashion-MNIST (Debian's dataset-fashion-mnist: 60,000 train / 10,000 test images) at
N labels per class, scored on all 10,000 test images, timed from an empty feature cache.

Each run is the command line a user would type, in a subprocess, with a fresh
--cache-dir and --out under --work (deleted at the start):

    headstart train /usr/share/datasets/fashion-mnist --backbone auto --ensemble K
        --labels-per-class N --seed S --cache-dir WORK/cache-N-S --out WORK/run-N-S

Wall time is the subprocess' (start to exit: ranking every bundled candidate, the
ensemble's features and cross-validation, the test evaluation, the save). Accuracy,
members and the cross-validated combination come from the saved headstart.json.

Run: PYTHONPATH=src .venv/bin/python bench/bench_ensemble.py [--per-class 100]
        [--seeds 0,1,2] [--ensemble 4] [--json docs/benchmarks/ensemble/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def one_run(work: Path, per_class: int, seed: int, ensemble: int) -> dict:
    cache, out = work / f"cache-{per_class}-{seed}", work / f"run-{per_class}-{seed}"
    command = [
        sys.executable, "-m", "headstart", "train", str(FASHION_MNIST),
        "--backbone", "auto", "--ensemble", str(ensemble),
        "--labels-per-class", str(per_class), "--seed", str(seed),
        "--cache-dir", str(cache), "--out", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - started
    (work / f"log-{per_class}-{seed}.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"run {per_class}/{seed} failed ({done.returncode}):\n{done.stderr}")
    meta = json.loads((out / "headstart.json").read_text())
    members = meta["ensemble"]["members"]
    return {
        "labels_per_class": per_class,
        "seed": seed,
        "accuracy": meta["metrics"]["test"]["accuracy"],
        "test_images": meta["metrics"]["test"]["n"],
        "wall_seconds": round(seconds, 1),
        "combine": meta["ensemble"]["combine"],
        "cross_validation": meta["ensemble"]["cross_validation"],
        "members": [
            f"{m['backbone']}@{m['input']['size'][0]} {'+'.join(m['layers'])}" for m in members
        ],  # fmt: skip
        "command": " ".join(command[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", default="100", help="comma-separated (100)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ensemble", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-ensemble"))
    parser.add_argument("--json", type=Path, help="append the results to this JSON file")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rows = []
    for per_class in (int(v) for v in args.per_class.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            row = one_run(args.work, per_class, seed, args.ensemble)
            rows.append(row)
            print(
                f"{per_class}/class seed {seed}: {row['accuracy']:.2%} "
                f"in {row['wall_seconds']:.0f}s"
                f" ({row['combine']}; {', '.join(row['members'])})",
                flush=True,
            )
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.exists() else []
        machine = {"cpu_count": os.cpu_count(), "python": platform.python_version()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(previous + [{"machine": machine, "runs": rows}], indent=1))


if __name__ == "__main__":
    main()
