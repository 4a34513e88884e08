"""``headstart train``: fit a classifier on a folder of images and save it.

Parse the flags into a `TrainingJob`, run it, print what it says: every choice a run
makes (ranking, ensemble members, unlabelled images, the split, the out folder) is the
library's, so a Python user and the server make the same ones."""

from __future__ import annotations

import argparse
from typing import Any

from headstart.cli.arguments import (
    add_cache_arguments,
    add_config_arguments,
    add_data_arguments,
    add_labels_argument,
    add_log_argument,
    add_model_arguments,
    add_out_argument,
    cache_folder,
    check_log_argument,
    check_weights_argument,
    config_changes,
    decode_options,
    log_callbacks,
    parse_labels_per_class,
)
from headstart.cli.common import PrintingCallback, join_world
from headstart.cli.launch import add_nproc_argument, check_nproc, launch_torchrun
from headstart.strategies.registry import strategy_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a classifier on your images")
    add_data_arguments(parser)
    parser.add_argument(
        "--strategy",
        choices=strategy_names(),
        help="default: feature-extraction; with --budget, the budget's choice (naming "
        "feature-extraction or fine-tune keeps the budget to that strategy)",
    )
    parser.add_argument(
        "--budget",
        metavar="TIME",
        help="train within TIME (90s, 10m, 1h or seconds): time each option on this "
        "machine and data, train the most accurate expected that fits",
    )
    add_model_arguments(parser)
    add_labels_argument(parser, "all", several=False)
    parser.add_argument(
        "--unlabelled",
        metavar="DIR",
        help="folder of unlabelled images for --strategy semi-supervised (searched recursively)",
    )
    add_out_argument(parser, "train", makes_files=True)
    add_log_argument(parser)
    parser.add_argument(
        "--ensemble",
        type=int,
        metavar="K",
        help="combine the top K candidates of `headstart rank` (distinct backbone and size "
        "pairs; every bundled backbone unless --backbone names one) into one model",
    )
    parser.add_argument(
        "--combine",
        choices=("auto", "average", "concat"),
        default="auto",
        help="how --ensemble joins its members: averaged probabilities, one head on the "
        "concatenated features, or auto (the better by cross-validation on training)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model already in --out (and the evaluation files beside it)",
    )
    add_nproc_argument(parser)
    add_cache_arguments(parser)
    add_config_arguments(parser)
    parser.set_defaults(run=run, backbone=None)  # None: not given (--ensemble ranks them all)


def job_from(args: argparse.Namespace) -> Any:
    """The `TrainingJob` the flags describe."""
    from headstart.job.training import TrainingJob

    changes = config_changes(args)
    layers = changes.pop("layers", None)
    (labels_per_class,) = parse_labels_per_class(args.labels_per_class, several=False)
    return TrainingJob(
        args.data,
        strategy=args.strategy,
        backbone=args.backbone,
        layers="auto" if layers == ("auto",) else layers,
        config=changes,
        test_size=args.test_size,
        labels_per_class=labels_per_class,
        unlabelled=args.unlabelled,
        ensemble=args.ensemble,
        combine=args.combine,
        weights=args.weights,
        cache_dir=cache_folder(args),
        out=args.out,
        overwrite=args.overwrite,
        resume=args.resume,
        strict=args.strict,
        decode=decode_options(args),
        budget=args.budget,
    )


def run(args: argparse.Namespace) -> int:
    """Every check that takes seconds comes before the slow part: the flags, then the
    --out folder (writable, not holding a model, not in use), then the backbone with its
    weights and the settings that need its structure; only then is a single image decoded."""
    import os

    from headstart.train.callbacks import CallbackList

    check_weights_argument(args.weights)
    check_nproc(args.nproc)
    check_log_argument(args)
    job = job_from(args)
    job.check(processes=max(args.nproc or 1, int(os.environ.get("WORLD_SIZE", "1"))))
    if args.nproc and args.nproc > 1:
        return launch_torchrun(args.nproc, args.argv)
    if not join_world():  # under torchrun: rank 0 alone prints, logs and writes
        job.run()
        return 0
    loggers = log_callbacks(args, run_name=f"train {args.out.name}")
    try:
        job.run(CallbackList([PrintingCallback(args.words, data=str(args.data)), *loggers]))
    except BaseException:  # an error or Ctrl-C: the tracked runs say they failed
        for logger in loggers:
            logger.close(failed=True)
        raise
    return 0
