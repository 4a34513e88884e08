"""Training within a budget (issue 25): `headstart train DATA --budget B` end to end,
from an empty feature cache, on Fashion-MNIST at 100 labels per class (all 10,000 test
images) and on the bundled sample (1,000 training and 1,000 test images).

    PYTHONPATH=src .venv/bin/python bench/bench_budget.py --data sample --budgets 2m,5m \
        --json docs/benchmarks/budget/sample.json
    PYTHONPATH=src .venv/bin/python bench/bench_budget.py --data fashion-mnist \
        --budgets 2m --json docs/benchmarks/budget/fashion-mnist.json

Each run: the wall time of the whole command (start-up, loading, timing, fitting, the
test pass, saving), its test accuracy, what the budget chose and each part's estimate
and actual seconds, from the model's headstart.json."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"), ["--labels-per-class", "100"]),
    "sample": (Path(__file__).resolve().parents[1] / "src/headstart/sample_data", []),
}


def run_one(data: str, budget: str, work: Path) -> dict:
    folder, extra = DATA[data]
    out = work / f"{data}-{budget}"
    cache = work / f"cache-{data}-{budget}"
    command = [sys.executable, "-m", "headstart", "train", str(folder), "--budget", budget,
               *extra, "--cache-dir", str(cache), "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (work / f"{data}-{budget}.log").write_text(done.stdout + done.stderr)
    row = {"data": data, "budget": budget, "wall_seconds": round(wall, 1), "rc": done.returncode,
           "command": " ".join(["headstart", *command[3:]])}  # fmt: skip
    if done.returncode != 0:
        row["error"] = (done.stdout + done.stderr)[-800:]
        return row
    meta = json.loads((out / "headstart.json").read_text())
    record = meta["budget"]
    row.update(
        accuracy=meta["metrics"]["test"]["accuracy"],
        n_test=meta["metrics"]["test"]["n"],
        chose=record["chosen"],
        over_budget=round(wall / record["budget_seconds"] - 1, 3),
        parts=record["parts"],
        setup_seconds=record["setup_seconds"],
        cut=record["cut"],
        options={
            o["name"] + " " + str(o["image_size"] or ""): o["estimate_seconds"]
            for o in record["options"]
        },  # fmt: skip
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", choices=sorted(DATA), required=True)
    parser.add_argument("--budgets", default="2m,5m,15m")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        for budget in args.budgets.split(","):
            row = run_one(args.data, budget, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.json:  # after each run: a stopped benchmark keeps what it finished
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
