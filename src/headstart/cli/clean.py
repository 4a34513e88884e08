"""``headstart clean``: which labels look wrong (confident learning on held-out probe
probabilities from cached features), outliers and near-duplicates, as a ranked CSV and
a self-contained HTML gallery; ``--apply`` turns a relabelling file into a corrected
CSV. Nothing is written into DATA, and no image is moved or deleted."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from headstart._internal.text import printable
from headstart.cli.arguments import (
    DEFAULT_BACKBONE,
    add_cache_arguments,
    add_dicom_arguments,
    add_inference_arguments,
    add_max_pixels_argument,
    add_out_argument,
    add_strict_argument,
    cache_folder,
    check_runtime,
    check_weights_argument,
    decode_options,
)
from headstart.cli.common import print_report

SHOWN = 10  # issues printed; the CSV and the page have them all


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "clean",
        help="find likely label errors, outliers and near-duplicates (CSV + HTML gallery)",
        description="Score every labelled image with a linear probe that never saw it "
        "(k folds over the frozen backbone's cached features), flag the labels confident "
        "learning doubts, and write label_issues.csv, near_duplicates.csv and a "
        "self-contained label_issues.html to --out. DATA itself is only read.",
    )
    parser.add_argument(
        "data", help="folder of class folders, a CSV, or train/+test/ (its train part)"
    )
    parser.add_argument(
        "--apply",
        type=Path,
        metavar="RELABEL_CSV",
        help="write --out/corrected.csv (path,label for every image) from a CSV of path,label "
        "corrections (or an edited label_issues.csv: its suggested_label column); a label of "
        "(drop) leaves the image out. No features are computed",
    )
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="a timm architecture")
    parser.add_argument("--weights", default="auto", help="auto, bundled, hub, or a file")
    parser.add_argument("--image-size", type=int, help="input size (default: the backbone's)")
    parser.add_argument(
        "--layers", default="final", help="comma-separated feature layers (default: final)"
    )
    parser.add_argument("--folds", type=int, default=5, help="held-out folds (5)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the folds (0)")
    parser.add_argument(
        "--rank-by",
        default="self_confidence",
        help="order of the issues: self_confidence (probability of the given label) or "
        "normalized_margin",
    )
    parser.add_argument(
        "--duplicate-similarity",
        type=float,
        default=0.95,
        help="cosine similarity of features from which two images are near-duplicates (0.95)",
    )
    parser.add_argument(
        "--outlier-similarity",
        type=float,
        default=0.2,
        help="an image whose 5 nearest neighbours average a lower cosine is an outlier (0.2)",
    )
    add_strict_argument(parser)
    add_max_pixels_argument(parser)
    add_dicom_arguments(parser)
    add_cache_arguments(parser)
    add_inference_arguments(parser)
    add_out_argument(parser, "clean", makes_files=True)
    parser.set_defaults(run=run)


def _labelled(args: argparse.Namespace):
    from headstart.data.layout import is_presplit, load_images, open_dataset

    options = decode_options(args)
    if is_presplit(args.data):
        train, _ = load_images(args.data, strict=args.strict, options=options)
        print(
            printable(
                f"note: {args.data} is split already; its training part is cleaned "
                "(give its test part as DATA to clean that)"
            )
        )
        return train
    return open_dataset(args.data, strict=args.strict, options=options)


def run(args: argparse.Namespace) -> int:
    from headstart.evaluation.issue_files import refuse_inside

    refuse_inside(args.out, args.data)
    if args.apply is not None:
        return _apply(args)
    from headstart.evaluation.issue_files import write_issue_files
    from headstart.evaluation.label_issues import check_issue_settings, find_label_issues

    settings = {
        "folds": args.folds, "seed": args.seed, "rank_by": args.rank_by,
        "duplicate_similarity": args.duplicate_similarity,
        "outlier_similarity": args.outlier_similarity,
    }  # fmt: skip
    check_issue_settings(settings)  # a bad value fails before any image is read
    check_weights_argument(args.weights)
    check_runtime(args.device, args.batch_size)
    started = time.perf_counter()
    dataset = _labelled(args)
    print_report("data", dataset, args.words)
    folder = cache_folder(args)
    found = find_label_issues(
        dataset, backbone=args.backbone, weights=args.weights, image_size=args.image_size,
        layers=tuple(layer.strip() for layer in args.layers.split(",") if layer.strip()),
        cache=folder is not None, cache_dir=folder, device=args.device,
        batch_size=args.batch_size, notice=lambda line: print(printable(line)), **settings,
    )  # fmt: skip
    paths = write_issue_files(found, dataset, args.out, title=f"Label issues: {args.data}")
    print(printable(found.summary()))
    for rank, issue in enumerate(found.issues[:SHOWN], start=1):
        print(
            printable(
                f"  {rank:>3}. {issue.path}: {issue.given} -> {issue.suggested} "
                f"({issue.confidence:.0%}; {issue.reason})"
            )
        )
    if len(found.issues) > SHOWN:
        print(f"  ... and {len(found.issues) - SHOWN} more")
    print(printable(f"wrote {paths['csv']}, {paths['duplicates']} and {paths['html']}"))
    print(f"cleaned in {time.perf_counter() - started:.0f}s")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from headstart.evaluation.issue_files import apply_relabels, write_corrected_csv

    dataset = _labelled(args)
    rows, relabelled, dropped = apply_relabels(dataset, args.apply)
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_corrected_csv(rows, args.out / "corrected.csv")
    print(
        printable(
            f"wrote {path}: {len(rows)} images, {relabelled} relabelled, {dropped} left out "
            f"(train on it: headstart train {path})"
        )
    )
    return 0
