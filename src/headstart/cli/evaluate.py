"""``headstart evaluate``: accuracy, per-class precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

import argparse
import json

from headstart._internal.text import printable
from headstart._internal.validation import POSITIVE_INT, check_flag
from headstart.cli.arguments import (
    add_cache_arguments,
    add_inference_arguments,
    add_max_pixels_argument,
    add_out_argument,
    add_runtime_argument,
    add_strict_argument,
    add_tta_argument,
    decode_options,
)
from headstart.cli.common import load_model, print_report
from headstart.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="accuracy, per-class P/R/F1, confusion matrix")
    parser.add_argument(
        "model",
        help="a folder written by `headstart train`, or a .onnx file from `headstart export`",
    )
    parser.add_argument(
        "data",
        help="labelled images: a folder of class folders, a CSV, or data with its own "
        "train/test split (its test part is used)",
    )
    add_strict_argument(parser)
    add_max_pixels_argument(parser)
    add_inference_arguments(parser)
    add_runtime_argument(parser)
    add_tta_argument(parser)
    add_cache_arguments(parser)
    add_out_argument(parser, "evaluate", makes_files=False)
    add_explain_arguments(parser)
    parser.add_argument(
        "--all-images",
        action="store_true",
        help="score every image of the data the model was trained on, its training images "
        "too (by default only the test split train held out of it: the others flatter it)",
    )
    parser.set_defaults(run=run)


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    """The top-losses gallery --out writes, and its Grad-CAM heatmaps."""
    parser.add_argument(
        "--explain",
        action="store_true",
        help="beside each image of the gallery, where the model looked (Grad-CAM; needs "
        "--out and a PyTorch model)",
    )
    parser.add_argument(
        "--top-losses",
        type=int,
        default=16,
        metavar="N",
        help="images the gallery shows, most confidently wrong first (16)",
    )


def run(args: argparse.Namespace) -> int:
    from headstart.data.layout import evaluation_set, trained_on_split
    from headstart.evaluation.heatmaps import check_explainable

    if args.explain and args.out is None:
        raise ConfigError("--explain draws its heatmaps into the gallery --out writes; give --out.")
    check_flag("--top-losses", POSITIVE_INT, args.top_losses)
    clf, where = load_model(args, cached=True)
    if args.explain:  # an ONNX model is refused before any image is read
        check_explainable(clf)
    # Decoded as the model's training images were, with --max-pixels if given.
    options = decode_options(args, clf.decode_options_)
    source = (getattr(clf, "metrics_", None) or {}).get("test", {}).get("data")
    recorded = (getattr(clf, "metrics_", None) or {}).get("test", {}).get("n")
    held = None
    if not args.all_images:
        held = trained_on_split(args.data, source, strict=args.strict, options=options)
    dataset = (
        held if held is not None else evaluation_set(args.data, strict=args.strict, options=options)
    )
    print_report("data", dataset, args.words)
    if held is not None:
        print(
            f"note: {printable(args.data)} is the data this model was trained on: scoring "
            f"only the test split train held out of it ({len(dataset)} of the "
            f"{dataset.report.loaded} images: the stratified {_share(source)}, seed "
            f"{source.get('seed', 0)}), as train did; --all-images scores every image, the "
            "training ones too"
        )
        if recorded is not None and recorded != len(dataset):
            print(
                f"warning: train tested on {recorded} images and this split has "
                f"{len(dataset)}: the data changed since training, so some of these images "
                "may have trained the model"
            )
    metrics = clf.evaluate(dataset, batch_size=args.batch_size, tta=args.tta, **where)
    names = [printable(c) for c in clf.classes_]  # a class folder's name is data too
    width = max(len(c) for c in names)
    print(f"{'class':<{width}}  precision  recall     f1  support")
    for row in metrics["per_class"]:
        print(
            f"{printable(row['class']):<{width}}  {row['precision']:>9.1%} {row['recall']:>7.1%} "
            f"{row['f1']:>6.1%}  {row['support']:>7}"
        )
    print(
        f"balanced accuracy {metrics['balanced_accuracy']:.1%}, accuracy {metrics['accuracy']:.1%}"
        + (f" (test-time augmentation {metrics['tta']}: {metrics['tta_views']} views per image)"
           if metrics.get("tta", "none") != "none" else "")
    )  # fmt: skip
    print("confusion matrix (rows: true, columns: predicted):")
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        print(f"  {name:<{width}} " + " ".join(f"{v:>5}" for v in row))
    if args.out is not None:
        from headstart._internal.atomic import atomic_write
        from headstart.evaluation.plots import save_confusion_matrix

        png = save_confusion_matrix(
            metrics["confusion_matrix"], clf.classes_, args.out / "confusion_matrix.png",
            title=f"{clf.strategy}, accuracy {metrics['accuracy']:.1%}",
        )  # fmt: skip
        text = json.dumps({"data": str(args.data), **metrics}, indent=2)
        atomic_write(args.out / "evaluation.json", lambda handle: handle.write(text.encode()))
        print(f"wrote {png} and {args.out / 'evaluation.json'}")
        write_mistakes(args, clf, dataset, where)
    return 0


def write_mistakes(args: argparse.Namespace, clf: object, dataset: object, where: dict) -> None:
    """The top-losses gallery (with --explain, its heatmaps) and mistakes.json in --out."""
    from headstart.evaluation.mistakes import find_mistakes, write_gallery

    found = find_mistakes(
        clf, dataset, top=args.top_losses, explain=args.explain, batch_size=args.batch_size,
        **where,
    )  # fmt: skip
    page, data = write_gallery(found, dataset, args.out, title=f"{clf.strategy} on {args.data}")
    pairs = ", ".join(f"{p.given} as {p.predicted} ({p.count})" for p in found.pairs[:3])
    print(printable(f"{found.wrong} of {found.total} wrong; most confused: {pairs or 'none'}"))
    print(f"wrote {page} and {data}")


def _share(source: dict) -> str:
    size = source.get("test_size", 0.2)
    return f"{size:.0%}" if isinstance(size, float) else f"{size} images"
