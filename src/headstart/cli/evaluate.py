"""``headstart evaluate``: accuracy, per-class precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

import argparse
import json

from headstart._internal.text import printable
from headstart.cli.arguments import (
    add_cache_arguments,
    add_inference_arguments,
    add_max_pixels_argument,
    add_out_argument,
    add_runtime_argument,
    add_strict_argument,
    decode_options,
)
from headstart.cli.common import load_model, print_report


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
    add_cache_arguments(parser)
    add_out_argument(parser, "evaluate", makes_files=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from headstart.data.layout import evaluation_set

    clf, where = load_model(args, cached=True)
    # Decoded as the model's training images were, with --max-pixels if given.
    options = decode_options(args, clf.decode_options_)
    dataset = evaluation_set(args.data, strict=args.strict, options=options)
    print_report("data", dataset, args.words)
    metrics = clf.evaluate(dataset, batch_size=args.batch_size, **where)
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
    )
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
    return 0
