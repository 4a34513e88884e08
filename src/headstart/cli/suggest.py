"""``headstart suggest``: which unlabelled images to label next (active learning)."""

from __future__ import annotations

import argparse
from pathlib import Path

from headstart._internal.text import printable
from headstart.cli.arguments import add_cache_arguments, add_inference_arguments, check_runtime


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "suggest",
        help="which unlabelled images to label next",
        description="Rank the images of a pool by how much labelling them should help, "
        "from cached features: the uncertainty of the current model (a trained RUN's head, "
        "or a linear probe on labelled DATA) raised for classes with few labels, in a "
        "diverse batch; with no or too few labels, a representative first batch. Writes "
        "a CSV and a self-contained HTML page of thumbnails.",
    )
    parser.add_argument("source", metavar="RUN|DATA", help="a model folder or labelled data")
    parser.add_argument(
        "--unlabelled", required=True, metavar="POOL", help="folder (or CSV) of unlabelled images"
    )
    parser.add_argument(
        "-n", "--number", dest="n", type=int, default=20, help="how many to suggest (20)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("suggestions.csv"),
        help="the CSV to write (suggestions.csv); the HTML page goes beside it (.html)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch (0)")
    parser.add_argument("--backbone", help="backbone for labelled DATA (default: the default)")
    parser.add_argument("--image-size", type=int, help="input size for labelled DATA")
    add_cache_arguments(parser, can_skip=False)
    add_inference_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from headstart.active.suggesting import suggest

    check_runtime(args.device, args.batch_size)
    found = suggest(
        args.source, args.unlabelled, args.n, seed=args.seed, backbone=args.backbone,
        cache_dir=args.cache_dir, image_size=args.image_size, device=args.device,
        batch_size=args.batch_size,
    )  # fmt: skip
    for note in found.notes:
        print(printable(f"note: {note}"))
    print(f"{len(found)} of {found.pool_size} pool images ({found.mode}):")
    for rank, s in enumerate(found, start=1):
        guess = "" if s.suggested_label is None else f" -> {s.suggested_label}"
        if s.probability is not None:
            guess += f" ({s.probability:.0%})"
        print(printable(f"{rank:>3}. {s.path}: {s.reason}{guess}"))
    csv_path = found.to_csv(args.out)
    html_path = found.to_html(Path(args.out).with_suffix(".html"))
    print(printable(f"wrote {csv_path} and {html_path}"))
    return 0
