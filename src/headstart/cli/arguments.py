"""Flags shared by several commands, and their parsing into library values."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError
from headstart.strategies.registry import strategy_names
from headstart.train.config import BN_POLICIES, HEADS


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", help="folder of class folders, train/+test/ folders, CSV or IDX folder"
    )
    parser.add_argument("--strategy", default="feature-extraction", choices=strategy_names())
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm architecture")
    parser.add_argument(
        "--weights", default="auto", help="auto, bundled, hub, or a .safetensors/.pth file"
    )
    parser.add_argument("--labels-per-class", type=int, help="train on k images per class")
    parser.add_argument(
        "--unlabelled",
        metavar="DIR",
        help="folder of unlabelled images for --strategy semi-supervised (searched recursively)",
    )
    parser.add_argument("--test-size", type=float, default=0.2, help="held-out share (default 0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    group = parser.add_argument_group("training (default: the strategy's own)")
    group.add_argument("--epochs", type=int)
    group.add_argument("--batch-size", type=int)
    group.add_argument(
        "--head-lr", "--lr", dest="head_lr", type=float, help="learning rate of the new head"
    )
    group.add_argument("--base-lr", type=float, help="learning rate of the top backbone group")
    group.add_argument("--layer-decay", type=float, help="LR factor per group below the top")
    group.add_argument(
        "--freeze-groups", type=int, help="freeze N groups from the input (<0: train the last -N)"
    )
    group.add_argument("--bn-policy", choices=BN_POLICIES)
    group.add_argument("--head", choices=HEADS)
    group.add_argument(
        "--layers", help="feature layers, e.g. final or stage-2,stage-1,final (stage-1: the last)"
    )
    group.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, help="random crops and flips"
    )
    group.add_argument("--no-lp-ft", action="store_true", help="fine-tune without a linear probe")
    group.add_argument("--class-weights", choices=("none", "balanced"))
    group.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: off)")
    group.add_argument("--image-size", type=int, help="input resolution in pixels")
    group.add_argument("--device", help="auto, cpu, cuda or mps")
    group.add_argument("--cache-dir", type=Path, help="feature cache folder")
    group.add_argument("--no-cache", action="store_true", help="recompute features")


def config_from_args(args: argparse.Namespace) -> Any:
    from headstart.strategies.registry import get_strategy

    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "head_lr": args.head_lr,
        "base_lr": args.base_lr,
        "layer_decay": args.layer_decay,
        "freeze_groups": args.freeze_groups,
        "head": args.head,
        "augment": args.augment,
        "class_weights": args.class_weights,
        "image_size": args.image_size,
        "device": args.device,
        "seed": args.seed,
        "patience": args.patience,
        "bn_policy": args.bn_policy,
    }
    if args.layers:
        overrides["layers"] = tuple(x.strip() for x in args.layers.split(",") if x.strip())
    if args.no_lp_ft:
        overrides["lp_ft"] = False
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return get_strategy(args.strategy).default_config().replace(**overrides)


def check_weights_argument(weights: str) -> None:
    """A weights path that does not exist fails now, not after loading every image."""
    if weights not in ("auto", "bundled", "hub", "none") and not Path(weights).is_file():
        raise ConfigError(
            f"The 'weights' parameter must be auto, bundled, hub, none or an existing "
            f".safetensors/.pth file. Got {weights!r} instead (no such file)."
        )


def cache_folder(args: argparse.Namespace) -> Path | None:
    """The feature cache to use: ``--cache-dir``, else the default; None with --no-cache."""
    from headstart.features.cache import default_cache_dir

    if getattr(args, "no_cache", False):
        return None
    return args.cache_dir or default_cache_dir()


def parse_sizes(text: str) -> tuple[int | None, ...]:
    sizes: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            sizes.append(None)
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            raise ConfigError(
                f"The 'labels_per_class' parameter must be positive ints or 'all', comma-"
                f"separated (e.g. 10,30,100,all). Got {part!r} instead."
            )
    return tuple(sizes)


def parse_ints(name: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"The {name!r} parameter must be comma-separated ints. Got {text!r} instead."
        ) from None
    return values
