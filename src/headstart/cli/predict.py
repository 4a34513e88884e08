"""``headstart predict``: the top-k classes of image files, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from headstart._internal.text import printable
from headstart.cli.arguments import (
    add_inference_arguments,
    add_max_pixels_argument,
    add_runtime_argument,
    add_strict_argument,
    add_tta_argument,
    decode_options,
)
from headstart.cli.common import EXIT_ERROR, load_model
from headstart.errors import respell


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="top-k classes for images")
    parser.add_argument(
        "model",
        help="a folder written by `headstart train`, or a .onnx file from `headstart export`",
    )
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per image (3)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    add_strict_argument(parser)
    add_max_pixels_argument(parser)
    add_inference_arguments(parser)
    add_runtime_argument(parser)
    add_tta_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    clf, where = load_model(args)
    clf.decode_options_ = decode_options(args, clf.decode_options_)  # --max-pixels, if given
    predictions, skipped = clf.predict_files(
        args.images, top_k=args.top_k, batch_size=args.batch_size, strict=args.strict,
        tta=args.tta, **where,
    )  # fmt: skip
    if args.format == "json":
        payload = [p.to_dict() for p in predictions]
        payload += [{"image": s.path, "error": s.reason} for s in skipped]
        print(json.dumps(payload, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "rank", "class", "probability"])
        for p in predictions:
            for rank, (name, q) in enumerate(p.top, start=1):
                writer.writerow([p.source, rank, name, f"{q:.6f}"])
    else:
        for p in predictions:
            top = ", ".join(f"{name} {q:.1%}" for name, q in p.top)
            print(printable(f"{p.source}: {top}"))  # one row per image, whatever its name
    for s in skipped:  # skipped with a note, as everywhere; --strict makes it an error
        reason = respell(s.reason, args.words)  # --max-pixels, not DecodeOptions.max_pixels
        print(printable(f"headstart: skipped {s.path}: {reason}"), file=sys.stderr)
    return 0 if predictions else EXIT_ERROR  # nothing could be read: that is no success
