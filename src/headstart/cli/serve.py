"""``headstart serve``: predictions over HTTP (FastAPI + uvicorn), with a web page.

    headstart serve runs/photos                  # http://127.0.0.1:8000/
    headstart serve --data photos/               # the page trains on photos/ first
    headstart serve --data photos/ --unlabelled pool/   # label pool/ into photos/ at /label

Binding beyond this machine needs ``--token`` (or ``--insecure``, on purpose).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import numbers
import os
import sys
from pathlib import Path

from headstart._internal.validation import Interval, check_flag
from headstart.cli.arguments import add_max_pixels_argument, add_model_arguments, add_tta_argument
from headstart.errors import ConfigError

# What `headstart serve` needs beyond headstart's own dependencies: import name -> package.
SERVER_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}
TOKEN_VARIABLE = "HEADSTART_TOKEN"  # a token from the environment stays out of `ps`


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="serve a model over HTTP, with a web page")
    parser.add_argument(
        "model", nargs="?", help="a folder written by `headstart train` (or, with --runtime "
        "onnx, an ONNX export); may be left out with --data, to train from the page first",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    parser.add_argument(
        "--token",
        help=f"clients must send 'Authorization: Bearer TOKEN' (default: ${TOKEN_VARIABLE})",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a --host beyond this machine without a token",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="a folder of class folders the page may train on (the page also takes a zip)",
    )
    parser.add_argument(
        "--unlabelled",
        type=Path,
        metavar="POOL",
        help="a folder of images to label on the page at /label, into --data",
    )
    parser.add_argument(
        "--labels-as",
        choices=("folders", "csv"),
        default="folders",
        help="how labels are written into --data: pool images copied into class "
        "folders, or rows of DATA/labels.csv (folders)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("headstart-serve"),
        help="where models trained from the page are written (./headstart-serve)",
    )
    add_model_arguments(parser)
    parser.add_argument("--image-size", type=int, help="input size of models trained here")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-batch-size", type=int, default=32, help="images per pass (32)")
    limits.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="wait for a batch to fill (5 ms)"
    )
    limits.add_argument("--max-images", type=int, default=32, help="images per request (32)")
    limits.add_argument("--max-body-mb", type=float, default=20.0, help="request body size (20 MB)")
    limits.add_argument(
        "--max-queued-images", type=int, default=256, help="beyond: 503 + Retry-After (256)"
    )
    limits.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds a request's images may take to decode and predict (30)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=120.0,
        help="seconds a request body may take to arrive, all of it (120; beyond: 408)",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=64,
        help="open connections at once (64; beyond: 503)",
    )
    add_max_pixels_argument(limits)
    add_tta_argument(parser, " for every prediction (--max-batch-size and --max-queued-images "
                     "count its forward passes)")  # fmt: skip
    parser.set_defaults(run=run)


def missing_packages() -> list[str]:
    return [
        pkg for module, pkg in SERVER_PACKAGES.items() if importlib.util.find_spec(module) is None
    ]


def run(args: argparse.Namespace) -> int:
    missing = missing_packages()
    if missing:
        raise ConfigError(
            f"`headstart serve` needs {', '.join(missing)}, which are not installed.",
            hint="Install the server extra: pip install 'headstart[serve]'.",
        )
    import uvicorn

    from headstart.serve.app import check_bind, create_app, is_loopback, server_config
    from headstart.serve.limits import ServeLimits
    from headstart.serve.predictor import load_predictor

    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    check_bind(args.host, token, args.insecure)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535. Got {args.port} instead.")
    size = Interval(numbers.Real, 0, None, closed="neither", finite=True)
    check_flag("--max-body-mb", size, args.max_body_mb)
    if args.model is None and args.data is None:
        raise ConfigError("Nothing to serve: give a model folder, or --data DIR to train one.")
    if args.unlabelled is not None and args.data is None:
        raise ConfigError("--unlabelled needs --data DIR: the folder the labels go into.")
    if args.data is not None and not args.data.is_dir():
        if args.data.exists() or args.unlabelled is None:
            raise ConfigError(f"--data {args.data}: not a folder.")
        args.data.mkdir(parents=True)  # a new labelling project
    store = _label_store(args)
    limits = ServeLimits(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        request_timeout_s=args.timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queued_images=args.max_queued_images,
    )
    predictor = None
    if args.model is not None:
        predictor = load_predictor(args.model, args.runtime, tta=args.tta)
    training = None
    if args.data is not None or args.model is None:
        from headstart.serve.training import TrainingJobs, TrainingSettings

        settings = TrainingSettings(
            out=args.out,
            data=args.data if store is None else store.data,
            backbone=args.backbone,
            weights=args.weights,
            image_size=args.image_size,
            tta=args.tta,
        )
        training = TrainingJobs(settings, limits)
    labelling = None
    if store is not None:
        from headstart.serve.labelling import Labelling

        labelling = Labelling(store, training)
    # On this machine only, the Host must be one of its own names: a page of another site
    # whose DNS was re-pointed at 127.0.0.1 (rebinding) is refused. Bound wider (a token
    # is then required), the names it is reached by are not known here.
    hosts = [args.host, "localhost", "127.0.0.1", "::1"] if is_loopback(args.host) else None
    app = create_app(
        predictor,
        limits,
        token=token,
        training=training,
        words=args.words,
        allowed_hosts=hosts,
        labelling=labelling,
    )
    handler = logging.StreamHandler(sys.stderr)
    log = logging.getLogger("headstart.serve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    where = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}/"
    print(f"headstart: serving on {where} (Ctrl-C to stop)", flush=True)
    try:
        config = server_config(
            app, args.host, args.port, limits, log_level="warning", access_log=False
        )
        uvicorn.Server(config).run()
    finally:
        log.removeHandler(handler)
    return 0


def _label_store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The labels of the project folder (``--data``), when there is a pool to label."""
    if args.unlabelled is None:
        return None
    from headstart.serve.labels import LabelStore

    return LabelStore(args.data, args.unlabelled, labels_as=args.labels_as)
