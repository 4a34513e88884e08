"""``headstart cache``: list the feature cache's entries and size, or clear them."""

from __future__ import annotations

import argparse
import time

from headstart.cli.arguments import add_cache_arguments, cache_folder
from headstart.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("cache", help="show the feature cache's entries and size; --clear")
    add_cache_arguments(parser, can_skip=False)
    parser.add_argument("--clear", action="store_true", help="delete cached features")
    parser.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="with --clear: only entries unused that long",
    )
    parser.set_defaults(run=run)


def _size(count: float) -> str:
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KB", "MB"):
        count /= 1024
        if count < 1024:
            return f"{count:.1f} {unit}"
    return f"{count / 1024:.1f} GB"


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def run(args: argparse.Namespace) -> int:
    from headstart.features.cache import FeatureCache

    cache = FeatureCache(cache_folder(args))
    if args.older_than is not None and not args.older_than >= 0:
        raise ConfigError(f"--older-than DAYS must be >= 0. Got {args.older_than:g} instead.")
    if args.older_than is not None and not args.clear:
        raise ConfigError("--older-than DAYS only applies with --clear.")
    if args.clear:
        removed, freed = cache.clear(args.older_than)
        age = "" if args.older_than is None else f" unused for {args.older_than:g}+ days"
        print(f"removed {_entries(removed)}{age} ({_size(freed)}) from {cache.root}")
        return 0
    entries = cache.entries()
    total = sum(entry.size for entry in entries)
    # An entry is one shard: some images at some layers, for one model (weights,
    # preprocessing, decoding, numerics). A run draws on every shard of its model.
    models = len({entry.key.split("/")[0] for entry in entries})
    of = f" for {models} model{'s' if models != 1 else ''}" if entries else ""
    print(f"feature cache at {cache.root}: {_entries(len(entries))}{of}, {_size(total)}")
    for entry in entries:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        images = "?" if entry.images is None else f"{entry.images:,}"
        print(
            f"  {_size(entry.size):>9}  {images:>7} images  last used {used}  "
            f"model {entry.key[:8]}  {', '.join(entry.layers) or '(no layers)'}"
        )
    if entries:
        print("free space with: headstart cache --clear [--older-than DAYS]")
    return 0
