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
    from headstart.data.layout import evaluation_set
    from headstart.evaluation.heatmaps import check_explainable

    if args.explain and args.out is None:
        raise ConfigError("--explain draws its heatmaps into the gallery --out writes; give --out.")
    check_flag("--top-losses", POSITIVE_INT, args.top_losses)
    clf, where = load_model(args, cached=True)
    if args.explain:  # an ONNX model is refused before any image is read
        check_explainable(clf)
    # Decoded as the model's training images were, with --max-pixels if given.
    options = decode_options(args, clf.decode_options_)
    dataset = evaluation_set(args.data, strict=args.strict, options=options)
    print_report("data", dataset, args.words)
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
