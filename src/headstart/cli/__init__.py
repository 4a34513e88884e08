"""The ``headstart`` command: parse arguments, call the library, print the result.

One module per command, each with ``add_parser`` and ``run``; a command imports torch,
timm or matplotlib only inside ``run``, so ``headstart --help`` stays instant. Only
headstart's own errors are caught: each becomes one line on stderr and a non-zero
exit. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from headstart._internal.text import printable
from headstart.cli import (
    backbones,
    cache,
    check,
    clean,
    compare,
    evaluate,
    export,
    predict,
    rank,
    serve,
    suggest,
    train,
)
from headstart.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, cli_words
from headstart.errors import ConfigError, HeadstartError, TrainingInterrupted

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headstart",
        description="Transfer learning on small image collections, measured against scratch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backbones.add_parser(sub)
    cache.add_parser(sub)
    compare.add_parsers(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    check.add_parser(sub)
    clean.add_parser(sub)
    predict.add_parser(sub)
    export.add_parser(sub)
    rank.add_parser(sub)
    serve.add_parser(sub)
    suggest.add_parser(sub)
    for command in sub.choices.values():  # its flags word the library's errors
        command.set_defaults(command_parser=command)
    return parser


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# Commands that run under torchrun as ranks of one job; any other would run N copies of
# itself side by side, each writing the same files.
DISTRIBUTED_COMMANDS = ("train", "compare", "rank")


def _refuse_distributed(command: str) -> None:
    world_size = os.environ.get("WORLD_SIZE", "1")
    if command not in DISTRIBUTED_COMMANDS and world_size.isdigit() and int(world_size) > 1:
        raise ConfigError(
            f"`headstart {command}` does not run distributed (WORLD_SIZE={world_size}: "
            f"this is one of several torchrun processes); only "
            f"{', '.join(DISTRIBUTED_COMMANDS)} does. Run `headstart {command}` without torchrun."
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc passes on
    words = args.words = cli_words(args.command_parser)
    # SIGTERM outside the training loop (e.g. during feature extraction) ends like
    # Ctrl-C: exit 130, not a silent kill. The loop installs its own handler.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        _refuse_distributed(args.command)
        return int(args.run(args))
    except TrainingInterrupted as exc:
        print(f"headstart: {printable(exc.render(words), keep_newlines=True)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except HeadstartError as exc:
        # A message's own lines (a list of bad files) are kept; the names inside it are
        # data, escaped so they cannot split a line or run an escape code.
        print(
            f"headstart: error: {printable(exc.render(words), keep_newlines=True)}", file=sys.stderr
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("headstart: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (`headstart cache | head`): not an error
        with contextlib.suppress(OSError, ValueError, AttributeError):  # none at exit either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # disk full, permission denied, a path that vanished
        print(f"headstart: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
