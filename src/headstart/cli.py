"""The ``headstart`` command: parse arguments, call the library, print the result.

Only headstart's own errors are caught: each becomes one line on stderr and a
non-zero exit. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headstart.console import ProgressPrinter
from headstart.engine import Callback, TrainingInterrupted
from headstart.errors import ConfigError, DataError, HeadstartError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def default_cache_dir() -> Path:
    """Where extracted features are kept between runs."""
    env = os.environ.get("HEADSTART_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "headstart"


def _cmd_backbones(args: argparse.Namespace) -> int:
    from headstart.backbones import list_backbones

    rows = list_backbones()
    print(f"{'backbone':<24} {'source':<10} {'available':<9} {'params':>8} {'input':>5}  note")
    for row in rows:
        params = f"{row.parameters / 1e6:.1f}M" if row.parameters else "?"
        size = f"{row.input_size}" if row.input_size else "?"
        available = "yes" if row.available else "no"
        print(f"{row.name:<24} {row.source:<10} {available:<9} {params:>8} {size:>5}  {row.note}")
    print(
        "\nAny other timm architecture loads with --weights PATH (.safetensors or a .pth "
        "state dict), or from the Hugging Face hub when this machine has a network."
    )
    return 0


class _PrintingCallback(Callback):
    """Prints the plan, stages, progress and one line per epoch."""

    def __init__(self) -> None:
        self._progress: dict[str, ProgressPrinter] = {}

    def on_plan(self, plan: Any) -> None:
        print(plan.format(), flush=True)

    def on_stage(self, name: str, detail: str) -> None:
        print(f"{name}: {detail}", flush=True)

    def on_progress(self, label: str, done: int, total: int) -> None:
        printer = self._progress.get(label)
        if printer is None or done < getattr(printer, "_done", 0):
            printer = self._progress[label] = ProgressPrinter(label)
        printer._done = done
        printer(done, total)

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        self.on_progress(f"epoch {epoch}", step, steps)

    def on_epoch(self, record: Any) -> None:
        val = ""
        if record.val_accuracy is not None:
            val = f", val loss {record.val_loss:.3f}, val acc {record.val_accuracy:.1%}"
        print(
            f"{record.stage} epoch {record.epoch}: train loss {record.train_loss:.3f}, "
            f"train acc {record.train_accuracy:.1%}{val} ({record.seconds:.1f}s)",
            flush=True,
        )


def _print_report(label: str, dataset: Any) -> None:
    report = dataset.report
    if report.skipped or report.rotated or report.converted:
        print(f"{label}: {report.summary()}")
    counts = dataset.class_counts()
    smallest, largest = min(counts.values()), max(counts.values())
    if smallest and largest / smallest >= 3:
        print(
            f"{label}: classes are imbalanced ({smallest} to {largest} images per class); "
            "consider --class-weights balanced, and read the balanced accuracy"
        )


def _load_training_data(args: argparse.Namespace) -> tuple[Any, Any]:
    from headstart.data import load_images, sample_per_class

    train, test = load_images(
        args.data, test_size=args.test_size, seed=args.seed, strict=args.strict
    )
    if train.report is test.report or train.report.source == test.report.source:
        _print_report("data", train)  # one file set, split in two: one report
    else:
        _print_report("train", train)
        _print_report("test", test)
    if args.labels_per_class:
        train = sample_per_class(train, args.labels_per_class, seed=args.seed)
    print(
        f"data: {len(train)} training and {len(test)} test images, "
        f"{len(train.classes)} classes ({', '.join(train.classes[:6])}"
        f"{', ...' if len(train.classes) > 6 else ''})"
    )
    return train, test


def _config_from_args(args: argparse.Namespace) -> Any:
    from headstart.strategies import get_strategy

    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "head_lr": args.lr,
        "base_lr": args.base_lr,
        "layer_decay": args.layer_decay,
        "freeze_groups": args.freeze_groups,
        "head": args.head,
        "augment": args.augment,
        "class_weights": args.class_weights,
        "image_size": args.image_size,
        "device": args.device,
        "seed": args.seed,
        "patience": args.patience,
        "bn_policy": args.bn_policy,
    }
    if args.layers:
        overrides["layers"] = tuple(x.strip() for x in args.layers.split(",") if x.strip())
    if args.no_lp_ft:
        overrides["lp_ft"] = False
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return get_strategy(args.strategy).default_config().replace(**overrides)


def _check_weights_argument(weights: str) -> None:
    """A weights path that does not exist fails now, not after loading every image."""
    if weights not in ("auto", "bundled", "hub", "none") and not Path(weights).is_file():
        raise ConfigError(
            f"The 'weights' parameter must be auto, bundled, hub, none or an existing "
            f".safetensors/.pth file. Got {weights!r} instead (no such file)."
        )


def _cmd_train(args: argparse.Namespace) -> int:
    import shutil

    from headstart.backbones import check_backbone_name
    from headstart.doctor import diagnose
    from headstart.estimator import ImageClassifier
    from headstart.strategies import get_strategy

    out = Path(args.out)
    _check_weights_argument(args.weights)
    check_backbone_name(args.backbone)
    config = _config_from_args(args)
    uses_unlabelled = get_strategy(args.strategy).uses_unlabelled
    if uses_unlabelled and not args.unlabelled:
        raise ConfigError(
            f"--strategy {args.strategy} needs --unlabelled DIR, a folder of images without labels"
        )
    if args.unlabelled and not uses_unlabelled:
        raise ConfigError(
            f"--unlabelled is only used by --strategy semi-supervised, not {args.strategy}"
        )
    if args.unlabelled and not Path(args.unlabelled).is_dir():
        raise ConfigError(f"--unlabelled {args.unlabelled}: folder not found")
    train, test = _load_training_data(args)
    unlabelled = None
    if args.unlabelled:
        from headstart.data import load_unlabelled

        unlabelled = load_unlabelled(args.unlabelled, strict=args.strict)
        _print_report("unlabelled", unlabelled)
        # A test image among the unlabelled ones would flatter the test score, and a
        # training image adds nothing: both are dropped, by content.
        unlabelled, dropped = unlabelled.excluding(train, test)
        if not len(unlabelled):
            raise DataError(
                f"--unlabelled {args.unlabelled}: every image in it is also in {args.data} "
                "(training or test part); give a folder of images that are not"
            )
        print(
            f"unlabelled: {len(unlabelled)} images from {args.unlabelled}"
            + (f" ({dropped} also in the training or test images, left out)" if dropped else "")
        )
    for line in diagnose(train, test).brief(args.data, skip=("unreadable", "imbalance")):
        print(line)  # the load report above already named skipped files and imbalance
    cache = None if args.no_cache else (args.cache_dir or default_cache_dir() / "features")
    clf = ImageClassifier(
        backbone=args.backbone,
        strategy=args.strategy,
        config=config,
        weights=args.weights,
        cache_dir=cache,
        checkpoint_dir=out / "checkpoints",
        callback=_PrintingCallback(),
    )
    clf.fit(train, unlabelled=unlabelled, resume=args.resume)
    print(f"trained in {clf.fit_seconds_:.1f}s")
    metrics = clf.evaluate(test)
    clf.metrics_ = {"test": {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "n")}}
    clf.save(out)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the run is complete
    print(
        f"test accuracy {metrics['accuracy']:.1%}, balanced accuracy "
        f"{metrics['balanced_accuracy']:.1%} on {metrics['n']} images"
    )
    print(f"model saved to {out}/ (model.safetensors, headstart.json)")
    return 0


def _evaluation_set(path: str) -> Any:
    """The labelled images to evaluate on: the test part of pre-split data, else all of it."""
    from headstart.data import find_idx_pair, load_idx, open_dataset

    folder = Path(path)
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return open_dataset(folder / "test")
    idx_test = find_idx_pair(folder, "t10k") if folder.is_dir() else None
    if idx_test is not None:
        return load_idx(*idx_test)
    return open_dataset(folder)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from headstart.estimator import ImageClassifier
    from headstart.features import atomic_write
    from headstart.plots import save_confusion_matrix

    clf = ImageClassifier.load(args.model)
    dataset = _evaluation_set(args.data)
    _print_report("data", dataset)
    metrics = clf.evaluate(dataset)
    out = Path(args.out) if args.out else Path(args.model)
    width = max(len(c) for c in clf.classes_)
    print(f"{'class':<{width}}  precision  recall     f1  support")
    for row in metrics["per_class"]:
        print(
            f"{row['class']:<{width}}  {row['precision']:>9.1%} {row['recall']:>7.1%} "
            f"{row['f1']:>6.1%}  {row['support']:>7}"
        )
    print(
        f"accuracy {metrics['accuracy']:.1%}, balanced accuracy {metrics['balanced_accuracy']:.1%}"
    )
    print("confusion matrix (rows: true, columns: predicted):")
    for name, row in zip(clf.classes_, metrics["confusion_matrix"], strict=True):
        print(f"  {name:<{width}} " + " ".join(f"{v:>5}" for v in row))
    png = save_confusion_matrix(
        metrics["confusion_matrix"], clf.classes_, out / "confusion_matrix.png",
        title=f"{clf.strategy}, accuracy {metrics['accuracy']:.1%}",
    )  # fmt: skip
    text = json.dumps({"data": str(args.data), **metrics}, indent=2)
    atomic_write(out / "evaluation.json", lambda handle: handle.write(text.encode()))
    print(f"wrote {png} and {out / 'evaluation.json'}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """The data doctor: report everything odd about DATA, fail only when asked to."""
    from headstart.doctor import check_data, write_report

    diagnosis = check_data(args.data)
    text_path, json_path = write_report(diagnosis, Path(args.out))
    print(diagnosis.to_text())
    print(f"wrote {text_path} and {json_path}")
    if args.strict and diagnosis.skipped:
        first = diagnosis.find("unreadable").details[0]
        print(
            f"headstart: error: --strict: {diagnosis.skipped} file(s) would be skipped, "
            f"first {first}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return 0


def _expand_images(paths: Sequence[str]) -> list[Path]:
    from headstart.data import IMAGE_EXTENSIONS

    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )  # fmt: skip
        else:
            found.append(path)
    return found


def _cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import json

    import numpy as np

    from headstart.data import decode_image
    from headstart.errors import ImageDecodeError
    from headstart.estimator import ImageClassifier

    if args.top_k < 1:
        raise ConfigError(f"The 'top_k' parameter must be >= 1. Got {args.top_k} instead.")
    clf = ImageClassifier.load(args.model)
    paths = _expand_images(args.images)
    if not paths:
        raise ConfigError("No images given: pass image files or folders of images.")
    good, failed, parts = [], [], []
    # In chunks, so a folder of 10,000 photos never sits decoded in memory at once.
    for start in range(0, len(paths), 256):
        images = []
        for path in paths[start : start + 256]:
            try:
                images.append(decode_image(path, clf.decode_options_)[0])
                good.append(path)
            except ImageDecodeError as exc:
                failed.append((path, exc.reason))
        if images:
            parts.append(clf.predict_proba(images))
    proba = np.concatenate(parts) if parts else np.zeros((0, len(clf.classes_)))
    k = min(args.top_k, len(clf.classes_))
    rows = []
    for path, p in zip(good, proba, strict=True):
        top = np.argsort(-p)[:k]
        rows.append({"image": str(path), "top": [(clf.classes_[i], float(p[i])) for i in top]})
    if args.format == "json":
        payload = [
            {
                "image": r["image"],
                "predictions": [{"class": c, "probability": q} for c, q in r["top"]],
            }
            for r in rows
        ] + [{"image": str(p), "error": reason} for p, reason in failed]
        print(json.dumps(payload, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "rank", "class", "probability"])
        for r in rows:
            for rank, (c, q) in enumerate(r["top"], start=1):
                writer.writerow([r["image"], rank, c, f"{q:.6f}"])
    else:
        for r in rows:
            print(r["image"] + ": " + ", ".join(f"{c} {q:.1%}" for c, q in r["top"]))
    for path, reason in failed:
        print(f"headstart: skipped {path}: {reason}", file=sys.stderr)
    return EXIT_ERROR if failed else 0


class _CompareCallback(_PrintingCallback):
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


def _parse_sizes(text: str) -> tuple[int | None, ...]:
    sizes: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            sizes.append(None)
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            raise ConfigError(
                f"The 'labels_per_class' parameter must be positive ints or 'all', comma-"
                f"separated (e.g. 10,30,100,all). Got {part!r} instead."
            )
    return tuple(sizes)


def _parse_ints(name: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"The {name!r} parameter must be comma-separated ints. Got {text!r} instead."
        ) from None
    return values


def _run_comparison(
    train: Any, test: Any, out: Path, settings: Any, args: argparse.Namespace, description: str
) -> int:
    from headstart.compare import compare
    from headstart.report import build_report

    cache = None if args.no_cache else (args.cache_dir or default_cache_dir() / "features")
    started = time.perf_counter()
    results = compare(
        train, test, out, settings, cache_dir=cache, callback=_CompareCallback(),
        data_description=description,
    )  # fmt: skip
    paths = build_report(out, title=f"headstart: {description}")
    from headstart.compare import load_results
    from headstart.report import summary_sentences

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


def _cmd_compare(args: argparse.Namespace) -> int:
    from headstart.backbones import check_backbone_name
    from headstart.compare import CompareSettings
    from headstart.data import load_images
    from headstart.doctor import diagnose

    _check_weights_argument(args.weights)
    check_backbone_name(args.backbone)
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    settings = CompareSettings(
        strategies=strategies,
        labels_per_class=_parse_sizes(args.labels_per_class),
        seeds=_parse_ints("seeds", args.seeds),
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        overrides=_strategy_overrides(args, strategies),
    )
    train, test = load_images(args.data, test_size=args.test_size, seed=0, strict=args.strict)
    if train.report is test.report or train.report.source == test.report.source:
        _print_report("data", train)
    shown = ("unreadable", "imbalance") if train.report.source == test.report.source else ()
    for line in diagnose(train, test).brief(args.data, skip=shown):
        print(line)
    out = Path(args.out) if args.out else Path(f"compare-{Path(args.data).resolve().name}")
    return _run_comparison(train, test, out, settings, args, f"{args.data}")


# The demo must finish within 5 minutes on a 2-core CPU: small epochs for the
# gradient strategies, the bundled lite0 at 112 px, one seed.
DEMO_OVERRIDES = {"fine-tune": {"epochs": 3}, "scratch": {"epochs": 5, "patience": 0}}


def _cmd_demo(args: argparse.Namespace) -> int:
    from headstart.compare import CompareSettings
    from headstart.data import load_fashion_mnist, load_sample

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
    return _run_comparison(train, test, Path(args.out), settings, args, description)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from headstart.config import HEADS
    from headstart.freezing import BN_POLICIES
    from headstart.strategies import STRATEGIES

    parser.add_argument(
        "data", help="folder of class folders, train/+test/ folders, CSV or IDX folder"
    )
    parser.add_argument("--strategy", default="feature-extraction", choices=sorted(STRATEGIES))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm architecture")
    parser.add_argument(
        "--weights", default="auto", help="auto, bundled, hub, or a .safetensors/.pth file"
    )
    parser.add_argument("--labels-per-class", type=int, help="train on k images per class")
    parser.add_argument(
        "--unlabelled",
        metavar="DIR",
        help="folder of unlabelled images for --strategy semi-supervised (searched recursively)",
    )
    parser.add_argument("--test-size", type=float, default=0.2, help="held-out share (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    group = parser.add_argument_group("training (default: the strategy's own)")
    group.add_argument("--epochs", type=int)
    group.add_argument("--batch-size", type=int)
    group.add_argument(
        "--head-lr", "--lr", dest="lr", type=float, help="learning rate of the new head"
    )
    group.add_argument("--base-lr", type=float, help="learning rate of the top backbone group")
    group.add_argument("--layer-decay", type=float, help="LR factor per group below the top")
    group.add_argument(
        "--freeze-groups", type=int, help="freeze N groups from the input (<0: train the last -N)"
    )
    group.add_argument("--bn-policy", choices=BN_POLICIES)
    group.add_argument("--head", choices=HEADS)
    group.add_argument(
        "--layers", help="feature layers, e.g. final or stage-2,stage-1,final (stage-1: the last)"
    )
    group.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, help="random crops and flips"
    )
    group.add_argument("--no-lp-ft", action="store_true", help="fine-tune without a linear probe")
    group.add_argument("--class-weights", choices=("none", "balanced"))
    group.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: off)")
    group.add_argument("--image-size", type=int, help="input resolution in pixels")
    group.add_argument("--device", help="auto, cpu, cuda or mps")
    group.add_argument("--cache-dir", type=Path, help="feature cache folder")
    group.add_argument("--no-cache", action="store_true", help="recompute features")


def _size(count: float) -> str:
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KB", "MB"):
        count /= 1024
        if count < 1024:
            return f"{count:.1f} {unit}"
    return f"{count / 1024:.1f} GB"


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _cmd_cache(args: argparse.Namespace) -> int:
    from headstart.features import FeatureCache

    root = args.cache_dir or default_cache_dir() / "features"
    cache = FeatureCache(root)
    if args.older_than is not None and not args.older_than >= 0:
        raise ConfigError(
            f"headstart cache: --older-than DAYS must be >= 0, got {args.older_than:g}"
        )
    if args.older_than is not None and not args.clear:
        raise ConfigError("headstart cache: --older-than DAYS only applies with --clear")
    if args.clear:
        removed, freed = cache.clear(args.older_than)
        age = "" if args.older_than is None else f" unused for {args.older_than:g}+ days"
        print(f"removed {_entries(removed)}{age} ({_size(freed)}) from {cache.root}")
        return 0
    entries = cache.entries()
    total = sum(entry.size for entry in entries)
    print(f"feature cache at {cache.root}: {_entries(len(entries))}, {_size(total)}")
    for entry in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        images = "?" if entry.images is None else f"{entry.images:,}"
        print(
            f"  {_size(entry.size):>9}  {images:>7} images  last used {used}  "
            f"{', '.join(entry.layers)}"
        )
    if entries:
        print("free space with: headstart cache --clear [--older-than DAYS]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headstart",
        description="Transfer learning on small image collections, measured against scratch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backbones = sub.add_parser("backbones", help="list the backbones this machine can load")
    backbones.set_defaults(run=_cmd_backbones)

    cache = sub.add_parser("cache", help="show the feature cache's entries and size; --clear")
    cache.add_argument("--cache-dir", type=Path, help="feature cache folder")
    cache.add_argument("--clear", action="store_true", help="delete cached features")
    cache.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="with --clear: only entries unused that long",
    )
    cache.set_defaults(run=_cmd_cache)

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
    demo.set_defaults(run=_cmd_demo)

    train = sub.add_parser("train", help="train a classifier on your images")
    _add_training_arguments(train)
    train.add_argument("--out", required=True, help="folder for the trained model")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.set_defaults(run=_cmd_train)

    evaluate = sub.add_parser("evaluate", help="accuracy, per-class P/R/F1, confusion matrix")
    evaluate.add_argument("model", help="a folder written by `headstart train`")
    evaluate.add_argument("data", help="labelled images (folder of class folders or CSV)")
    evaluate.add_argument("--out", help="where to write the PNG and JSON (default: the model)")
    evaluate.set_defaults(run=_cmd_evaluate)

    check = sub.add_parser(
        "check", help="data doctor: unreadable files, duplicates and leaks, imbalance, tiny"
    )
    check.add_argument("data", help="folder of class folders, train/+test/, CSV or IDX")
    check.add_argument(
        "--out", default=".", help="folder for check.txt and check.json (default: current folder)"
    )
    check.add_argument(
        "--strict", action="store_true", help="exit 2 when any file would be skipped"
    )
    check.set_defaults(run=_cmd_check)

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
    comparison.set_defaults(run=_cmd_compare)

    predict = sub.add_parser("predict", help="top-k classes for images")
    predict.add_argument("model", help="a folder written by `headstart train`")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--format", choices=("table", "json", "csv"), default="table")
    predict.set_defaults(run=_cmd_predict)
    return parser


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM outside the training loop (e.g. during feature extraction) ends like
    # Ctrl-C: exit 130, not a silent kill. The loop installs its own handler.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return int(args.run(args))
    except TrainingInterrupted as exc:
        print(f"headstart: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except HeadstartError as exc:
        print(f"headstart: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("headstart: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (`headstart cache | head`): not an error
        with contextlib.suppress(OSError, ValueError, AttributeError):  # none at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # disk full, permission denied, a path that vanished
        print(f"headstart: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
