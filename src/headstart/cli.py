"""The ``headstart`` command: parse arguments, call the library, print the result.

Only headstart's own errors are caught: each becomes one line on stderr and a
non-zero exit. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from headstart.errors import HeadstartError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def default_cache_dir() -> Path:
    """Where extracted features are kept between runs."""
    env = os.environ.get("HEADSTART_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "headstart"


def _cmd_backbones(args: argparse.Namespace) -> int:
    from headstart.backbones import list_backbones

    rows = list_backbones()
    print(f"{'backbone':<24} {'source':<10} {'available':<9} {'params':>8} {'input':>5}  note")
    for row in rows:
        params = f"{row.parameters / 1e6:.1f}M" if row.parameters else "?"
        size = f"{row.input_size}" if row.input_size else "?"
        available = "yes" if row.available else "no"
        print(f"{row.name:<24} {row.source:<10} {available:<9} {params:>8} {size:>5}  {row.note}")
    print(
        "\nAny other timm architecture loads with --weights PATH (.safetensors or a .pth "
        "state dict), or from the Hugging Face hub when this machine has a network."
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """Bundled sample -> bundled backbone -> cached features -> linear head -> test accuracy."""
    from headstart.backbones import create_backbone
    from headstart.console import ProgressPrinter
    from headstart.data import load_sample
    from headstart.features import FeatureCache, cached_features
    from headstart.probe import fit_linear_probe

    started = time.perf_counter()
    train, test = load_sample()
    print(
        f"data: bundled Fashion-MNIST sample, {len(train)} train / {len(test)} test images, "
        f"{len(train.classes)} classes"
    )
    backbone = create_backbone(args.backbone, weights="bundled", image_size=args.image_size)
    print(
        f"backbone: {backbone.name} ({backbone.num_parameters / 1e6:.1f}M parameters), "
        f"weights {backbone.weights.describe()}"
    )
    prep = backbone.preprocessing
    print(
        f"preprocessing (from the backbone's config): {prep.image_size} px, "
        f"{prep.interpolation}, mean {prep.mean}, std {prep.std}"
    )
    print("strategy: feature extraction, the whole backbone frozen; a linear head is trained")
    cache = None if args.no_cache else FeatureCache(default_cache_dir() / "features")
    features = {}
    for name, split in (("train", train), ("test", test)):
        t0 = time.perf_counter()
        found, was_cached = cached_features(
            backbone, split, cache, progress=ProgressPrinter(f"features {name}")
        )
        features[name] = found["final"]
        how = "from cache" if was_cached else "computed"
        print(f"features {name}: {found['final'].shape} {how} in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    probe = fit_linear_probe(features["train"], train.labels, len(train.classes))
    print(f"linear head: {probe.iterations} L-BFGS iterations in {time.perf_counter() - t0:.1f}s")
    accuracy = probe.score(features["test"], test.labels)
    print(
        f"test accuracy: {accuracy:.1%} on {len(test)} held-out images "
        f"(chance: {1 / len(train.classes):.0%}); total {time.perf_counter() - started:.0f}s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headstart",
        description="Transfer learning on small image collections, measured against scratch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backbones = sub.add_parser("backbones", help="list the backbones this machine can load")
    backbones.set_defaults(run=_cmd_backbones)

    demo = sub.add_parser("demo", help="run the pipeline on the bundled Fashion-MNIST sample")
    demo.add_argument("--backbone", default="tf_efficientnet_lite0", help="a bundled backbone")
    demo.add_argument(
        "--image-size", type=int, default=112, help="input resolution in pixels (default: 112)"
    )
    demo.add_argument("--no-cache", action="store_true", help="recompute features")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except HeadstartError as exc:
        print(f"headstart: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("headstart: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
