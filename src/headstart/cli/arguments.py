"""The command line's one vocabulary: each flag means the same thing in every command.

The training flags are derived from ``TrainConfig``'s fields (``head_lr`` becomes
``--head-lr``, with the field's own help), so the command line and the library
cannot drift apart. Shared flags (data loading, labels per class, the cache, the
output folder) are defined once here and added by each command that needs them.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from headstart._internal.validation import POSITIVE_INT, check_flag
from headstart.backbones import DEFAULT_BACKBONE
from headstart.errors import ConfigError
from headstart.train.config import TrainConfig


def _layer_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(
    parser: argparse.ArgumentParser,
    *,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    title: str = "training settings (default: the strategy's own)",
) -> None:
    """One flag per ``TrainConfig`` field (except ``skip``; only ``only`` when given), all
    defaulting to None: a flag not given leaves the strategy's own default."""
    group = parser.add_argument_group(title)
    for field in fields(TrainConfig):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        meta = field.metadata
        flags = [_flag(field.name)] + ([meta["alias"]] if meta.get("alias") else [])
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": meta["help"]}
        if field.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        elif field.type in ("int", "int | None"):
            kwargs["type"] = int
        elif field.type == "float":
            kwargs["type"] = float
        elif field.type.startswith("tuple"):
            kwargs["type"] = _layer_list
            kwargs["metavar"] = "LAYER,..."
        group.add_argument(*flags, **kwargs)


def config_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields the user set on the command line."""
    return {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """DATA, how it is split and how strictly it is read (train, compare)."""
    parser.add_argument(
        "data", help="folder of class folders, train/+test/ folders, a CSV or an IDX folder"
    )
    parser.add_argument(
        "--test-size",
        type=_share_or_count,
        help="held out for testing when DATA has no train/test split of its own: a share "
        "(default 0.2) or a number of images",
    )
    add_strict_argument(parser)
    add_max_pixels_argument(parser)
    add_dicom_arguments(parser)


def add_dicom_arguments(parser: argparse.ArgumentParser) -> None:
    """How DICOM values become pixels and which frames of a stack are read, for the
    commands that read training data (a trained model keeps its own rule)."""
    parser.add_argument(
        "--dicom-window",
        metavar="RULE",
        help="DICOM values to gray: 'file' (the file's first window; default), a preset "
        "(lung, mediastinum, abdomen, liver, brain, bone), CENTER,WIDTH, or 'none' "
        "(the full range of the stored bits)",
    )
    parser.add_argument(
        "--dicom-frames",
        dest="frames",
        choices=("middle", "all"),
        help="multi-frame DICOM and multi-page TIFF: the middle frame (default), or every "
        "frame as an image of the file's label (a file's frames stay on one side of the split)",
    )


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    """The decompression-bomb limit, for every command that decodes images: a genuine
    169-Mpx clip-art PNG is otherwise skipped with no way to allow it from here."""
    parser.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="images above N pixels (width x height) are skipped as possible "
        "decompression bombs (default 89,478,485, Pillow's; a trained model keeps its own)",
    )


def decode_options(args: argparse.Namespace, base: Any = None) -> Any:
    """``base`` (a model's own decode options, else the defaults) with ``--max-pixels``,
    ``--dicom-window`` and ``--dicom-frames`` applied, where the command has them; a bad
    value is the library's ConfigError, worded as the flag by main."""
    from dataclasses import replace

    from headstart.data.decode import DecodeOptions

    options = base if base is not None else DecodeOptions()
    given = {
        name: getattr(args, name)
        for name in ("max_pixels", "dicom_window", "frames")
        if getattr(args, name, None) is not None
    }
    return replace(options, **given) if given else options


def _share_or_count(text: str) -> float | int:
    """``0.2`` is a share, ``50`` a number of images (the library takes both)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def test_size(args: argparse.Namespace) -> float | int:
    """The held-out share or count; refused when DATA brings its own split, where it
    would be ignored."""
    from headstart.data.layout import is_presplit

    if args.test_size is None:
        return 0.2
    if is_presplit(args.data):
        raise ConfigError(
            f"--test-size does not apply: {args.data} has its own train/test split, which "
            "is used as it is. Leave --test-size out."
        )
    return args.test_size


def check_runtime(device: str | None, batch_size: int | None = None) -> None:
    """A device this machine lacks, or a batch of no images, fails before any image is
    loaded, not after."""
    from headstart.backbones.device import select_device

    if batch_size is not None:
        check_batch_size(batch_size)
    select_device(device or "auto")


def check_batch_size(batch_size: int) -> None:
    """A batch of no images is refused before any image is loaded (no torch needed)."""
    check_flag("--batch-size", POSITIVE_INT, batch_size)


def add_strict_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="an unreadable image is an error (exit 2), not skipped with a note",
    )


def add_labels_argument(parser: argparse.ArgumentParser, default: str, several: bool) -> None:
    what = "e.g. 10, 10,100 or all" if several else "e.g. 10, or all (default)"
    parser.add_argument(
        "--labels-per-class",
        default=default,
        help=f"labelled training images per class, drawn with the seed ({what})",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        help=f"a timm architecture ({DEFAULT_BACKBONE}); in train, 'auto' chooses by `headstart "
        "rank` (so does --layers auto)",
    )
    parser.add_argument(
        "--weights", default="auto", help="auto, bundled, hub, or a .safetensors/.pth file"
    )


def add_cache_arguments(parser: argparse.ArgumentParser, *, can_skip: bool = True) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="feature cache folder (default: $HEADSTART_CACHE, else ~/.cache/headstart/features)",
    )
    if can_skip:
        parser.add_argument("--no-cache", action="store_true", help="recompute features")


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a saved model runs (evaluate, predict)."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (64)")


def add_tta_argument(parser: argparse.ArgumentParser, what: str = "") -> None:
    """Test-time augmentation (evaluate, predict, serve, export): ``args.tta``, None
    when not given (the model's own default)."""
    from headstart.estimator.tta import DEFAULT_TTA, TTA_MODES

    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=None,
        metavar="MODE",
        help=f"test-time augmentation{what}: {', '.join(TTA_MODES)} (default {DEFAULT_TTA}"
        "; an exported file's own): average the probabilities over the image and its mirror "
        "(flip), and its 4 corner crops (flip+crops: 6 forward passes per image)",
    )


def add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    """Which engine runs a saved model (evaluate, predict)."""
    parser.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="torch runs a model folder; onnx runs a file from `headstart export` with ONNX "
        "Runtime, without PyTorch (auto: onnx for a .onnx file)",
    )


def add_out_argument(parser: argparse.ArgumentParser, command: str, makes_files: bool) -> None:
    """One rule: a command whose result is files writes them to --out (default
    ./headstart-<command>); a command that reports writes files only with --out."""
    if makes_files:
        parser.add_argument(
            "--out",
            type=Path,
            default=Path(f"headstart-{command}"),
            help=f"folder to write to (default: ./headstart-{command})",
        )
    else:
        parser.add_argument("--out", type=Path, help="also write the report files into this folder")


def parse_labels_per_class(text: str, *, several: bool) -> tuple[int | None, ...]:
    """``10``, ``10,100`` or ``all`` (None): one syntax wherever labels per class apply."""
    sizes: list[int | None] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == "all":
            sizes.append(None)
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            example = "10,30,100,all" if several else "10 or all"
            raise ConfigError(
                f"--labels-per-class takes positive ints or 'all' (e.g. {example}). "
                f"Got {part!r} instead."
            )
    if not several and len(sizes) != 1:
        raise ConfigError(
            f"--labels-per-class takes one size here (a model trains on one draw). Got {text!r}; "
            "`headstart compare` runs several."
        )
    return tuple(sizes)


def parse_ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated ints. Got {text!r} instead.") from None
    if any(v < 0 for v in values):
        raise ConfigError(f"{flag} takes ints >= 0. Got {text!r} instead.")
    return values


def check_weights_argument(weights: str) -> None:
    """A weights path that does not exist fails now, not after loading every image."""
    if weights not in ("auto", "bundled", "hub", "none") and not Path(weights).is_file():
        raise ConfigError(
            f"--weights takes auto, bundled, hub, none or an existing .safetensors/.pth file. "
            f"Got {weights!r} instead (no such file)."
        )


def cache_folder(args: argparse.Namespace) -> Path | None:
    """The feature cache to use: ``--cache-dir``, else the default; None with --no-cache."""
    from headstart.features.cache import default_cache_dir

    if getattr(args, "no_cache", False):
        return None
    return args.cache_dir or default_cache_dir()


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log",
        action="append",
        metavar="KIND:TARGET",
        help="log the run for experiment tracking (repeatable): tensorboard:DIR writes "
        "TensorBoard events under DIR, mlflow:URI logs to an MLflow store or server "
        "(mlflow:file:./mlruns, mlflow:http://127.0.0.1:5000); needs the "
        "headstart[tensorboard] or headstart[mlflow] extra",
    )


def check_log_argument(args: argparse.Namespace) -> None:
    """Fail before the long work: each ``--log`` well formed, its extra installed."""
    from headstart.tracking.common import check_specs

    check_specs(getattr(args, "log", None))


def log_callbacks(args: argparse.Namespace, **options: Any) -> list[Any]:
    """The ``--log`` loggers (none without the flag); a bad spec or a missing extra
    raises ConfigError before any training."""
    specs = getattr(args, "log", None)
    if not specs:
        return []
    from headstart.tracking import loggers_from_specs

    return loggers_from_specs(specs, **options)
