"""``headstart predict``: the top-k classes of image files, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

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
from headstart.errors import ConfigError, respell


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
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also write each image's Grad-CAM heatmap (where the model looked for its top "
        "class) as a PNG into --out; needs a PyTorch model",
    )
    parser.add_argument("--out", type=Path, help="folder for --explain's heatmap PNGs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.explain and args.out is None:
        raise ConfigError("--explain writes heatmap PNGs into a folder; give --out.")
    clf, where = load_model(args)
    if args.explain:  # an ONNX model is refused before any image is read
        from headstart.evaluation.heatmaps import check_explainable

        check_explainable(clf)
    clf.decode_options_ = decode_options(args, clf.decode_options_)  # --max-pixels, if given
    predictions, skipped = clf.predict_files(
        args.images, top_k=args.top_k, batch_size=args.batch_size, strict=args.strict,
        tta=args.tta, **where,
    )  # fmt: skip
    heatmaps = explained(args, clf, predictions, where)
    if args.format == "json":
        payload = [{**p.to_dict(), **heatmaps.get(p.source, {})} for p in predictions]
        payload += [{"image": s.path, "error": s.reason} for s in skipped]
        print(json.dumps(payload, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "rank", "class", "probability"] + ["heatmap"] * args.explain)
        for p in predictions:
            for rank, (name, q) in enumerate(p.top, start=1):
                extra = [heatmaps[p.source]["heatmap"]] if args.explain else []
                writer.writerow([p.source, rank, name, f"{q:.6f}", *extra])
    else:
        for p in predictions:
            top = ", ".join(f"{name} {q:.1%}" for name, q in p.top)
            print(printable(f"{p.source}: {top}"))  # one row per image, whatever its name
            if p.source in heatmaps:
                print(printable(f"  heatmap: {heatmaps[p.source]['heatmap']}"))
    for s in skipped:  # skipped with a note, as everywhere; --strict makes it an error
        reason = respell(s.reason, args.words)  # --max-pixels, not DecodeOptions.max_pixels
        print(printable(f"headstart: skipped {s.path}: {reason}"), file=sys.stderr)
    return 0 if predictions else EXIT_ERROR  # nothing could be read: that is no success


def explained(args: argparse.Namespace, clf: object, predictions: list, where: dict) -> dict:
    """With --explain: {image: {"heatmap": PNG path, "explained": class}} for each
    predicted image, each PNG written into --out; without it, nothing."""
    if not args.explain or not predictions:
        return {}
    from headstart.evaluation.heatmaps import write_heatmaps

    written = write_heatmaps(
        clf, [p.source for p in predictions], args.out, classes=[p.label for p in predictions],
        batch_size=min(args.batch_size, 16), **where,
    )  # fmt: skip
    return {w.source: {"heatmap": str(w.path), "explained": w.target} for w in written}
