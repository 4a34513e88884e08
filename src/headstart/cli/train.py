"""``headstart train``: fit a classifier on a folder of images and save it."""

from __future__ import annotations

import argparse
import os
from typing import Any

from headstart._internal.text import printable
from headstart.cli.arguments import (
    add_cache_arguments,
    add_config_arguments,
    add_data_arguments,
    add_labels_argument,
    add_model_arguments,
    add_out_argument,
    cache_folder,
    check_runtime,
    check_weights_argument,
    config_changes,
    decode_options,
    parse_labels_per_class,
    test_size,
)
from headstart.cli.common import PrintingCallback, join_world, print_report, print_reports
from headstart.cli.launch import add_nproc_argument, check_nproc, launch_torchrun
from headstart.errors import ConfigError, DataError
from headstart.strategies.registry import strategy_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a classifier on your images")
    add_data_arguments(parser)
    parser.add_argument("--strategy", default="feature-extraction", choices=strategy_names())
    add_model_arguments(parser)
    add_labels_argument(parser, "all", several=False)
    parser.add_argument(
        "--unlabelled",
        metavar="DIR",
        help="folder of unlabelled images for --strategy semi-supervised (searched recursively)",
    )
    add_out_argument(parser, "train", makes_files=True)
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


def load_training_data(args: argparse.Namespace, seed: int) -> tuple[Any, Any]:
    """The training and test images; under torchrun rank 0 alone decode-checks the folder
    and hands the result (paths, labels, hashes: never pixels) to the other ranks, rather
    than every rank reading every file at once on the same disks and cores."""
    from headstart.parallel import broadcast, world

    loaded = _load_training_data(args, seed) if world().is_main else None
    return broadcast(loaded)


def _load_training_data(args: argparse.Namespace, seed: int) -> tuple[Any, Any]:
    from headstart.data.layout import load_images
    from headstart.data.split import sample_per_class

    train, test = load_images(
        args.data,
        test_size=test_size(args),
        seed=seed,
        strict=args.strict,
        options=decode_options(args),
    )
    print_reports(train, test, args.words)
    (labels_per_class,) = parse_labels_per_class(args.labels_per_class, several=False)
    if labels_per_class is not None:
        train = sample_per_class(train, labels_per_class, seed=seed)
    print(
        printable(
            f"data: {len(train)} training and {len(test)} test images, "
            f"{len(train.classes)} classes ({', '.join(train.classes[:6])}"
            f"{', ...' if len(train.classes) > 6 else ''})"
        )
    )
    return train, test


def choose_by_ranking(args: argparse.Namespace, config: Any, train: Any) -> tuple[str, Any]:
    """(backbone, config) chosen by `headstart rank` on the training images: every
    bundled backbone for --backbone auto (at --image-size if given, else each one's own
    and half), every default layer set for --layers auto; the table and the reason print."""
    ranking = _rank_training_images(args, config, train, top=8)
    best = ranking.best
    print(printable(f"chosen: {best.candidate.name}: {ranking.why_best()}"))
    chosen = best.candidate
    return chosen.backbone, config.replace(image_size=chosen.image_size, layers=chosen.layers)


def _rank_training_images(args: argparse.Namespace, config: Any, train: Any, top: int) -> Any:
    """The ranking --backbone auto, --layers auto and --ensemble choose from: every bundled
    backbone for auto (else --backbone), at --image-size if given (else each one's own and
    half), every default layer set for --layers auto (else --layers); the table prints."""
    from headstart.cli.rank import candidates_from, run_ranking
    from headstart.rank.ranking import LAYER_SETS

    sizes = [config.image_size] if config.image_size else None
    layer_sets = LAYER_SETS if args.auto_layers else [config.layers]
    candidates = candidates_from(None if args.auto_backbone else [args.backbone], sizes, layer_sets)
    print(f"ranking {len(candidates)} candidates on the {len(train)} training images:")
    return run_ranking(
        args, train, candidates, device=config.device, batch_size=config.batch_size,
        seed=config.seed, top=top, indent="  ",
    )  # fmt: skip


def _print_diagnosis(args: argparse.Namespace, train: Any, test: Any) -> None:
    """The data doctor's brief; the load report above already named skipped files and
    imbalance."""
    from headstart.data.doctor import diagnose

    skip = ("unreadable", "imbalance")
    for line in diagnose(train, test).brief(args.data, skip=skip, words=args.words):
        print(line)


def run(args: argparse.Namespace) -> int:
    """Every check that takes seconds comes before the slow part: the flags, then the
    --out folder (writable, not holding a model, not in use), then the backbone with its
    weights and the settings that need its structure; only then is a single image decoded."""
    from pathlib import Path

    from headstart.backbones.registry import check_backbone_name
    from headstart.estimator.out_folder import ModelFolder
    from headstart.strategies.registry import get_strategy

    check_weights_argument(args.weights)
    check_nproc(args.nproc)
    _check_ensemble_arguments(args)
    args.auto_backbone = args.backbone == "auto"
    args.auto_layers = args.layers == ("auto",)
    several = (args.nproc or 1) > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several and (args.auto_backbone or args.auto_layers or args.ensemble):
        raise ConfigError(
            "--backbone auto, --layers auto and --ensemble rank candidates in one process; "
            "rank first (`headstart rank`), then train the choice on several processes."
        )
    if not args.auto_backbone:
        check_backbone_name(args.backbone)
    parse_labels_per_class(args.labels_per_class, several=False)  # a typo fails now
    strategy = get_strategy(args.strategy)
    if args.ensemble and args.strategy != "feature-extraction":
        raise ConfigError(
            f"--ensemble K joins frozen pretrained bodies under linear heads (feature "
            f"extraction); --strategy {args.strategy} trains the body. Leave --strategy out."
        )
    if (args.auto_backbone or args.auto_layers) and not strategy.pretrained:
        raise ConfigError(
            f"--backbone auto and --layers auto rank pretrained features; --strategy "
            f"{args.strategy} trains from random weights. Name a --backbone instead."
        )
    if args.auto_layers:
        args.layers = None  # chosen after the ranking
    changes = config_changes(args)
    config = strategy.default_config().replace(**changes)
    strategy.refuse_unused(config, changes)
    check_runtime(config.device)
    test_size(args)  # a --test-size the data's own split would ignore fails now
    if strategy.uses_unlabelled and not args.unlabelled:
        raise ConfigError(
            f"--strategy {args.strategy} needs --unlabelled DIR, a folder of images without labels"
        )
    if args.unlabelled and not strategy.uses_unlabelled:
        raise ConfigError(
            f"--unlabelled is only used by --strategy semi-supervised, not {args.strategy}"
        )
    if args.unlabelled and not Path(args.unlabelled).is_dir():
        raise ConfigError(f"--unlabelled {args.unlabelled}: folder not found")
    if args.nproc and args.nproc > 1:
        return launch_torchrun(args.nproc, args.argv)
    if not join_world():  # under torchrun: rank 0 alone prints and writes
        return _train(args, config, _NoFolder())
    with ModelFolder(args.out, overwrite=args.overwrite, resume=args.resume) as out:
        return _train(args, config, out)


class _NoFolder:
    """The --out folder as ranks other than 0 see it: nothing to write, no checkpoints
    (rank 0 reads the checkpoint to resume from and hands it to them)."""

    checkpoints = None


def _train(args: argparse.Namespace, config: Any, out: Any) -> int:
    from headstart.estimator.image_classifier import ImageClassifier

    auto = args.auto_backbone or args.auto_layers
    if args.ensemble:
        return _train_ensemble(args, config, out)
    if auto:  # the choice needs the training images: they are loaded first
        train, test = load_training_data(args, config.seed)
        args.backbone, config = choose_by_ranking(args, config, train)
    clf = ImageClassifier(
        backbone=args.backbone,
        strategy=args.strategy,
        config=config,
        weights=args.weights,
        cache_dir=cache_folder(args),
        checkpoint_dir=out.checkpoints,
        callback=None if isinstance(out, _NoFolder) else PrintingCallback(args.words),
    )
    clf.prepare()  # weights offline, --layers or --freeze-groups it lacks: fail before data
    if not auto:
        train, test = load_training_data(args, config.seed)
    unlabelled = None
    if args.unlabelled:
        from headstart.data.loaders import load_unlabelled
        from headstart.parallel import broadcast, world

        unlabelled = broadcast(
            load_unlabelled(args.unlabelled, strict=args.strict, options=decode_options(args))
            if world().is_main
            else None
        )
        print_report("unlabelled", unlabelled, args.words)
        unlabelled, dropped = unlabelled.unlabelled_apart_from(train, test)
        if not len(unlabelled):
            raise DataError(
                f"--unlabelled {args.unlabelled}: every image in it is also in {args.data} "
                "(training or test part); give a folder of images that are not"
            )
        print(
            f"unlabelled: {len(unlabelled)} images from {printable(args.unlabelled)}"
            + (f" ({dropped} also in the training or test images, left out)" if dropped else "")
        )
    _print_diagnosis(args, train, test)
    clf.fit(train, unlabelled=unlabelled, resume=args.resume)
    from headstart.parallel import close_distributed, world

    if world().size > 1:  # evaluating and saving are rank 0's alone, outside the group
        close_distributed()
        if isinstance(out, _NoFolder):
            return 0
    return _evaluate_and_save(args, config, out, clf, test)


def _evaluate_and_save(args: argparse.Namespace, config: Any, out: Any, clf: Any, test: Any) -> int:
    from pathlib import Path

    print(f"trained in {clf.fit_seconds_:.1f}s")
    metrics = clf.evaluate(test, batch_size=config.batch_size, device=config.device)
    measured = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "n")}
    # Where the test images came from, so `headstart export` can check its file on them.
    source = {"path": str(Path(args.data).resolve()), "test_size": test_size(args)}
    clf.metrics_ = {"test": {**measured, "data": {**source, "seed": config.seed}}}
    out.save(clf)
    print(
        f"test accuracy {metrics['accuracy']:.1%}, balanced accuracy "
        f"{metrics['balanced_accuracy']:.1%} on {metrics['n']} images"
    )
    print(f"model saved to {out.folder}/ (model.safetensors, headstart.json)")
    return 0


def _check_ensemble_arguments(args: argparse.Namespace) -> None:
    """--ensemble K ranks candidates: with no --backbone, every bundled one."""
    from headstart.cli.arguments import DEFAULT_BACKBONE

    if args.ensemble is None:
        if args.combine != "auto":
            raise ConfigError("--combine joins the members of --ensemble K; give --ensemble too")
        args.backbone = args.backbone or DEFAULT_BACKBONE
        return
    if args.ensemble < 2:
        raise ConfigError(f"--ensemble takes 2 or more members. Got {args.ensemble}.")
    if getattr(args, "head", None) not in (None, "linear") or getattr(args, "augment", None):
        raise ConfigError(
            "--ensemble fits a linear probe per member on features computed once: leave "
            "--head and --augment out"
        )
    if args.layers is None:  # not given: each member's layers are the ranking's choice
        args.layers = ("auto",)
    if args.resume:
        raise ConfigError("--ensemble has no checkpoints to --resume: its heads fit in seconds")
    args.backbone = args.backbone or "auto"


def _train_ensemble(args: argparse.Namespace, config: Any, out: Any) -> int:
    """Rank, keep the top K distinct (backbone, size) candidates, fit them as one model."""
    from headstart.estimator.ensemble import EnsembleMember, fit_ensemble

    train, test = load_training_data(args, config.seed)
    ranking = _rank_training_images(args, config, train, top=12)
    members, taken = [], set()
    for score in ranking.ranked:  # best first; one member per backbone and input size
        c = score.candidate
        if (c.backbone, c.image_size) not in taken and len(members) < args.ensemble:
            taken.add((c.backbone, c.image_size))
            members.append(EnsembleMember(c.backbone, c.image_size, tuple(c.layers)))
    if len(members) < 2:
        raise ConfigError(
            f"--ensemble {args.ensemble}: the ranking has {len(members)} distinct backbone and "
            "size pair(s); an ensemble needs 2. Rank more: --backbone auto (every bundled "
            "backbone), or leave --image-size out (each backbone at its own size and half)."
        )
    if len(members) < args.ensemble:
        print(f"note: only {len(members)} distinct backbone and size pairs were ranked")
    chosen = ", ".join(f"{m.name} ({','.join(m.layers)})" for m in members)
    print(printable(f"ensemble of the top {len(members)}: {chosen}"))
    _print_diagnosis(args, train, test)
    clf = fit_ensemble(
        train, members, combine=args.combine, weights=args.weights,
        config=config,
        callback=PrintingCallback(args.words),
    )  # fmt: skip
    return _evaluate_and_save(args, config, out, clf, test)
