"""``headstart evaluate``: accuracy, per-class precision/recall/F1 and the confusion matrix."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headstart.cli.common import print_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="accuracy, per-class P/R/F1, confusion matrix")
    parser.add_argument("model", help="a folder written by `headstart train`")
    parser.add_argument("data", help="labelled images (folder of class folders or CSV)")
    parser.add_argument("--out", help="where to write the PNG and JSON (default: the model)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from headstart._internal.atomic import atomic_write
    from headstart.data.layout import evaluation_set
    from headstart.estimator.image_classifier import ImageClassifier
    from headstart.evaluation.plots import save_confusion_matrix

    clf = ImageClassifier.load(args.model)
    dataset = evaluation_set(args.data)
    print_report("data", dataset)
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
