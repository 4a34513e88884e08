"""``headstart rank``: which backbone, input size and feature layers suit these images,
estimated from their training part without training every candidate."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headstart._internal.text import printable
from headstart.cli.arguments import (
    add_cache_arguments,
    add_data_arguments,
    add_inference_arguments,
    add_labels_argument,
    add_out_argument,
    cache_folder,
    check_runtime,
    check_weights_argument,
    decode_options,
    parse_ints,
    parse_labels_per_class,
    test_size,
)
from headstart.cli.common import join_world, print_reports
from headstart.errors import ConfigError, DataError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "rank",
        help="rank backbones, input sizes and feature layers for your images",
        description="Score every candidate (backbone x input size x layer set) on the "
        "training part of DATA by a cross-validated linear probe, LogME and kNN, from "
        "features extracted once (and cached); the test part is not looked at.",
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--backbones",
        default="bundled",
        help="comma-separated timm names, or 'bundled' (the backbones shipped with headstart "
        "that this machine has)",
    )
    parser.add_argument(
        "--image-sizes",
        help="comma-separated input sizes (default: each backbone's own and half of it)",
    )
    parser.add_argument(
        "--layers",
        default="auto",
        help="'auto' (final; stage-2,final; stage-3..final; stage-3..final also pooled over 2x2 "
        "regions) or one comma-separated layer set",
    )
    parser.add_argument("--weights", default="auto", help="auto, bundled or hub")
    parser.add_argument(
        "--rank-method",
        choices=("halving", "full"),
        default=None,
        help="full: every candidate on every image (the default, the reference); halving: "
        "every candidate on an eighth of the images, the bottom half dropped and the rest "
        "scored on twice as many, round by round (faster, a less faithful order)",
    )
    add_labels_argument(parser, "all", several=False)
    parser.add_argument("--seed", type=int, default=0, help="the split and the folds (0)")
    add_cache_arguments(parser)
    add_inference_arguments(parser)
    add_out_argument(parser, "rank", makes_files=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from headstart.data.layout import load_images
    from headstart.data.split import sample_per_class
    from headstart.rank.ranking import LAYER_SETS, save_ranking

    check_weights_argument(args.weights)
    check_runtime(args.device, args.batch_size)
    sizes = parse_ints("--image-sizes", args.image_sizes) if args.image_sizes else None
    if sizes and min(sizes) < 16:
        raise ConfigError(f"--image-sizes takes sizes of 16 px or more. Got {args.image_sizes}.")
    layer_sets = LAYER_SETS if args.layers == "auto" else [tuple(args.layers.split(","))]
    (per_class,) = parse_labels_per_class(args.labels_per_class, several=False)
    named = None if args.backbones == "bundled" else args.backbones.split(",")
    candidates = candidates_from(named, sizes, layer_sets)
    main = join_world()  # under torchrun each rank extracts its share; rank 0 writes
    train, test = load_images(
        args.data,
        test_size=test_size(args),
        seed=args.seed,
        strict=args.strict,
        options=decode_options(args),
    )
    print_reports(train, test, args.words)
    if per_class is not None:
        train = sample_per_class(train, per_class, seed=args.seed)
    print(
        f"ranking {len(candidates)} candidates on {len(train)} training images "
        f"({len(train.classes)} classes); the test part is not looked at"
    )
    ranking = run_ranking(
        args, train, candidates, device=args.device, batch_size=args.batch_size, seed=args.seed
    )
    best = ranking.best
    print(printable(f"best: {best.candidate.name}: {ranking.why_best()}"))
    print(f"ranked in {ranking.seconds:.0f}s")
    if args.out is not None and main:
        for path in save_ranking(ranking, Path(args.out)):
            print(printable(f"wrote {path}"))
    return 0


def candidates_from(
    names: Sequence[str] | None, sizes: Sequence[int] | None, layer_sets: Sequence[Sequence[str]]
) -> list[Any]:
    """The candidates of ``names`` (None: the bundled backbones this machine has, with a
    note for each it lacks) at ``sizes`` (None: each one's own and half) and layer sets."""
    from headstart.backbones.registry import list_backbones
    from headstart.rank.ranking import candidates_for

    native = {row.name: row.input_size for row in list_backbones() if row.input_size}
    return candidates_for(backbone_names(names), sizes, layer_sets, native)


def backbone_names(names: Sequence[str] | str | None) -> list[str]:
    """The backbones ``names`` means: comma-separated or listed timm names, each checked;
    None or 'bundled': the bundled ones this machine has, with a note for each it lacks
    (as ``rank --backbones`` and ``compare --backbones`` take them)."""
    from headstart.backbones.registry import check_backbone_name, list_backbones

    if isinstance(names, str):
        names = None if names.strip() == "bundled" else names.split(",")
    if names is None:
        known = list_backbones()
        for row in known:
            if row.source == "bundled" and not row.available:
                print(printable(f"note: {row.name} is not installed here ({row.note})"))
        return [r.name for r in known if r.source == "bundled" and r.available]
    names = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    for name in names:
        check_backbone_name(name)
    return names


def run_ranking(
    args: argparse.Namespace,
    train: Any,
    candidates: list[Any],
    *,
    device: str,
    batch_size: int,
    seed: int,
    top: int | None = None,
    indent: str = "",
) -> Any:
    """Rank ``candidates`` on ``train`` with the command's cache, printing progress and
    the table (its failures in the command's words); a DataError when none could be
    scored. ``train --backbone auto`` ranks through here too."""
    from headstart.features.cache import FeatureCache
    from headstart.rank.ranking import DEFAULT_METHOD, rank

    folder = cache_folder(args)
    ranking = rank(
        train,
        candidates,
        weights=args.weights,
        cache=FeatureCache(folder) if folder is not None else None,
        device=device,
        batch_size=batch_size,
        seed=seed,
        notice=lambda line: print(printable(f"{indent}{line}")),
        # compare ranks through here too, without the flag
        method=getattr(args, "rank_method", None) or DEFAULT_METHOD,
    )
    print(printable(ranking.format(top=top, words=args.words), keep_newlines=True))
    for note in ranking.notes:  # how it ranked (halving: on how many images)
        print(printable(f"{indent}note: {note}"))
    if not ranking.ranked:  # the table above gave each one's reason, in these words
        raise DataError("No candidate could be scored; each one's reason is listed above.")
    return ranking
