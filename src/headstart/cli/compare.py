"""``headstart compare`` and ``headstart demo``: strategies side by side, and a report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from headstart.cli.arguments import cache_folder, check_weights_argument, parse_ints, parse_sizes
from headstart.cli.common import EXIT_ERROR, PrintingCallback, print_report

# The demo must finish within 5 minutes on a 2-core CPU: small epochs for the
# gradient strategies, the bundled lite0 at 112 px, one seed.
DEMO_OVERRIDES = {"fine-tune": {"epochs": 3}, "scratch": {"epochs": 5, "patience": 0}}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="compare the strategies on the bundled Fashion-MNIST sample (~5 min)"
    )
    demo.add_argument("--backbone", default="tf_efficientnet_lite0", help="a bundled backbone")
    demo.add_argument(
        "--image-size", type=int, default=112, help="input resolution in pixels (default: 112)"
    )
    demo.add_argument("--full", action="store_true", help="the complete Fashion-MNIST (slower)")
    demo.add_argument("--out", default="headstart-demo", help="report folder")
    demo.add_argument("--cache-dir", type=Path, help="feature cache folder")
    demo.add_argument("--no-cache", action="store_true", help="recompute features")
    demo.set_defaults(run=run_demo)

    comparison = sub.add_parser(
        "compare", help="scratch vs feature-extraction vs fine-tune, across data sizes"
    )
    comparison.add_argument("data", help="folder of class folders, train/+test/, CSV or IDX")
    comparison.add_argument(
        "--strategies",
        default="scratch,feature-extraction,fine-tune",
        help="comma-separated; add semi-supervised to let the images not drawn at each size "
        "count as unlabelled ones",
    )
    comparison.add_argument("--labels-per-class", default="10,30,100,all", help="e.g. 10,100,all")
    comparison.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    comparison.add_argument("--out", help="report folder (default: compare-<data name>)")
    comparison.add_argument("--backbone", default="tf_efficientnet_lite0")
    comparison.add_argument("--weights", default="auto")
    comparison.add_argument("--image-size", type=int, default=112)
    comparison.add_argument("--epochs", type=int, help="epochs of fine-tune and scratch")
    comparison.add_argument("--test-size", type=float, default=0.2)
    comparison.add_argument("--strict", action="store_true")
    comparison.add_argument("--cache-dir", type=Path)
    comparison.add_argument("--no-cache", action="store_true")
    comparison.set_defaults(run=run_compare)


class CompareCallback(PrintingCallback):
    """Run-level lines; each strategy's plan once; training lines as in `train`."""

    def __init__(self) -> None:
        super().__init__()
        self._plans_shown: set[str] = set()

    def on_plan(self, plan: Any) -> None:
        if plan.strategy not in self._plans_shown:
            self._plans_shown.add(plan.strategy)
            super().on_plan(plan)

    def on_run_start(self, run: str, index: int, total: int) -> None:
        print(f"\n[{index}/{total}] {run}", flush=True)

    def on_run_end(self, record: dict[str, Any], reused: bool) -> None:
        if record.get("status") != "ok":
            print(f"{record['id']}: FAILED ({record.get('error')})", flush=True)
            return
        how = "reused from an earlier run" if reused else f"{record['train_seconds']:.1f}s"
        print(
            f"{record['id']}: test accuracy {record['accuracy']:.1%}, balanced "
            f"{record['balanced_accuracy']:.1%} ({how})",
            flush=True,
        )


def run_comparison(
    train: Any, test: Any, out: Path, settings: Any, args: argparse.Namespace, description: str
) -> int:
    from headstart.evaluation.comparison import compare, load_results
    from headstart.evaluation.report import build_report, summary_sentences

    started = time.perf_counter()
    results = compare(
        train, test, out, settings, cache_dir=cache_folder(args), callback=CompareCallback(),
        data_description=description,
    )  # fmt: skip
    paths = build_report(out, title=f"headstart: {description}")
    print("\nsummary:")
    for sentence in summary_sentences(load_results(out)):
        print(f"  {sentence}")
    print(
        f"\nreport: {paths['markdown']} and {paths['html']} ({time.perf_counter() - started:.0f}s)"
    )
    failed = [r["id"] for r in results["runs"] if r.get("status") != "ok"]
    if failed:
        print(f"headstart: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _strategy_overrides(args: argparse.Namespace, strategies: tuple[str, ...]) -> dict:
    overrides: dict[str, dict[str, Any]] = {}
    if args.epochs is not None:
        for name in strategies:
            if name not in ("feature-extraction", "semi-supervised"):  # heads solved by L-BFGS
                overrides.setdefault(name, {})["epochs"] = args.epochs
    return overrides


def run_compare(args: argparse.Namespace) -> int:
    from headstart.backbones.registry import check_backbone_name
    from headstart.data.doctor import diagnose
    from headstart.data.layout import load_images
    from headstart.evaluation.comparison import CompareSettings

    check_weights_argument(args.weights)
    check_backbone_name(args.backbone)
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    settings = CompareSettings(
        strategies=strategies,
        labels_per_class=parse_sizes(args.labels_per_class),
        seeds=parse_ints("seeds", args.seeds),
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        overrides=_strategy_overrides(args, strategies),
    )
    train, test = load_images(args.data, test_size=args.test_size, seed=0, strict=args.strict)
    if train.report is test.report or train.report.source == test.report.source:
        print_report("data", train)
    shown = ("unreadable", "imbalance") if train.report.source == test.report.source else ()
    for line in diagnose(train, test).brief(args.data, skip=shown):
        print(line)
    out = Path(args.out) if args.out else Path(f"compare-{Path(args.data).resolve().name}")
    return run_comparison(train, test, out, settings, args, f"{args.data}")


def run_demo(args: argparse.Namespace) -> int:
    from headstart.data.idx import load_fashion_mnist, load_sample
    from headstart.evaluation.comparison import CompareSettings

    if args.full:
        train, test = load_fashion_mnist()
        sizes: tuple[int | None, ...] = (10, 100)
        description = (
            f"Fashion-MNIST, full ({len(train)} training images to draw from, "
            f"{len(test)} test images)"
        )
    else:
        train, test = load_sample()
        sizes = (10, 30, 100)
        description = (
            f"bundled Fashion-MNIST sample ({len(train)} training and {len(test)} test images)"
        )
    settings = CompareSettings(
        labels_per_class=sizes,
        backbone=args.backbone,
        image_size=args.image_size,
        overrides=DEMO_OVERRIDES,
    )
    print(f"demo: scratch vs feature-extraction vs fine-tune on the {description}")
    return run_comparison(train, test, Path(args.out), settings, args, description)
