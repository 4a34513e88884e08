"""Fashion-MNIST test accuracy for each strategy at 10, 100 and 1000 labels per class.

The full Fashion-MNIST (Debian's dataset-fashion-mnist) with the bundled
EfficientNet-Lite0 at 112 px; every strategy draws the same images at each size and
is scored on all 10,000 test images. Writes results.json, report.md/html and the
plots to --out (reruns reuse finished runs).

Run: .venv/bin/python bench/bench_accuracy.py [--sizes 10,100,1000] [--scratch-epochs 6]
     [--fine-tune-epochs N] [--image-size 112] [--seeds 0]
     [--strategies scratch,feature-extraction,fine-tune,semi-supervised]
     [--out docs/benchmarks/fashion-mnist]

semi-supervised sees the training images not drawn at each size, without their labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from headstart.data.idx import load_fashion_mnist
from headstart.evaluation.comparison import CompareCallback, CompareSettings, compare
from headstart.evaluation.report import build_report, summary_sentences


class Lines(CompareCallback):
    def on_run_start(self, run: str, index: int, total: int) -> None:
        print(f"[{index}/{total}] {run}", flush=True)

    def on_run_end(self, record: dict, reused: bool) -> None:
        if record.get("status") == "ok":
            print(
                f"  {record['id']}: {record['accuracy']:.2%} in {record['train_seconds']:.0f}s"
                f"{' (reused)' if reused else ''}",
                flush=True,
            )
        else:
            print(f"  {record['id']}: FAILED {record.get('error')}", flush=True)

    def on_epoch(self, record) -> None:
        val = f", val {record.val_accuracy:.1%}" if record.val_accuracy is not None else ""
        print(f"    {record.stage} epoch {record.epoch}{val} ({record.seconds:.0f}s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument(
        "--strategies", default="scratch,feature-extraction,fine-tune,semi-supervised"
    )
    parser.add_argument("--scratch-epochs", type=int, default=6)
    parser.add_argument(
        "--fine-tune-epochs", type=int, help="default: the fine-tune strategy's own"
    )
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--seeds", default="0", help="comma-separated draw seeds")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/fashion-mnist"))
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/headstart-bench-cache"))
    args = parser.parse_args()
    train, test = load_fashion_mnist()
    overrides = {"scratch": {"epochs": args.scratch_epochs}}
    if args.fine_tune_epochs:
        overrides["fine-tune"] = {"epochs": args.fine_tune_epochs}
    settings = CompareSettings(
        strategies=tuple(args.strategies.split(",")),
        labels_per_class=tuple(int(k) for k in args.sizes.split(",")),
        image_size=args.image_size,
        seeds=tuple(int(seed) for seed in args.seeds.split(",")),
        overrides=overrides,
    )
    started = time.perf_counter()
    results = compare(
        train,
        test,
        args.out,
        settings,
        cache_dir=args.cache_dir,
        callback=Lines(),
        data_description="Fashion-MNIST (full test set of 10,000 images)",
    )
    build_report(args.out, title="headstart on Fashion-MNIST")
    for sentence in summary_sentences(results):
        print(sentence)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
