"""``--nproc N``: start the same command under torchrun, one process per rank.

torchrun (``python -m torch.distributed.run``) runs as a child process, not through its
Python API in this one: it installs signal handlers of its own and turns a worker's
failure into an exception with a summary, which would tangle with ours; as a child it
keeps its own behaviour exactly as documented (rendezvous, tearing the group down when
a worker dies, exit status), and the command it runs is the very one a user would type
for several machines. ``--standalone`` picks a free local port, so two runs on one
machine do not collide.
"""

from __future__ import annotations

import argparse
import numbers
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from headstart._internal.validation import Interval, check_flag
from headstart.errors import ConfigError

__all__ = ["add_nproc_argument", "launch_torchrun", "torchrun_command", "without_nproc"]


def add_nproc_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train in N processes on this machine (torchrun, DistributedDataParallel); "
        "for several machines run `torchrun ... -m headstart train ...` on each",
    )


def without_nproc(argv: Sequence[str]) -> list[str]:
    """The command line minus ``--nproc N`` (or ``--nproc=N``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "headstart",
        *without_nproc(argv),
    ]


def check_nproc(nproc: int | None) -> None:
    if nproc is None:
        return
    check_flag("--nproc", Interval(numbers.Real, 1, None), nproc)  # an int by its flag's type
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "--nproc starts torchrun, and this command already runs under torchrun "
            f"(WORLD_SIZE={os.environ['WORLD_SIZE']}); give the process count to torchrun only"
        )


def launch_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run the command in ``nproc`` processes; torchrun's exit status.

    Ctrl-C reaches torchrun and the workers from the terminal by itself, so this process
    only waits (tried: every rank stops at the same step, rank 0 saves a checkpoint and
    says where, and torchrun exits 1 with a traceback of its own); a SIGTERM sent to
    this process alone is passed on to torchrun, which passes it to the workers."""
    print(f"starting {nproc} processes: torchrun --standalone --nproc-per-node {nproc}")
    sys.stdout.flush()
    process = subprocess.Popen(torchrun_command(nproc, argv))

    def forward(signum: int, frame: Any) -> None:
        process.send_signal(signal.SIGTERM)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
    }
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
