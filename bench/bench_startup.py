"""Start-up time of the command line: ``headstart --help`` and ``headstart COMMAND --help``.

Each is run as a fresh process (what a user waits for), ``--repeat`` times; the table
gives the median and the slowest run, and which heavy libraries the process imported.
``--src`` points at another checkout's ``src`` folder, to measure an older version with
the same interpreter (``git worktree add /tmp/old <commit>``, then ``--src /tmp/old/src``).

Run: .venv/bin/python bench/bench_startup.py [--repeat 10] [--src PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = ["", "train", "compare", "evaluate", "predict", "check", "cache", "demo", "backbones"]
# Runs the CLI's main() with --help and reports which heavy modules got imported.
PROBE = """
import sys
from headstart.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = [m for m in ("torch", "timm", "matplotlib", "torchvision") if m in sys.modules]
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def run_once(command: str, env: dict[str, str]) -> tuple[float, str]:
    args = [sys.executable, "-c", PROBE, *([command] if command else []), "--help"]
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    heavy = next(line for line in done.stderr.splitlines() if line.startswith("HEAVY="))
    return seconds, heavy.removeprefix("HEAVY=") or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--src", help="a src folder to put first on PYTHONPATH")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = args.src
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| command | median | slowest | heavy imports |")
    print("| --- | --- | --- | --- |")
    for command in COMMANDS:
        runs = [run_once(command, env) for _ in range(args.repeat)]
        seconds = [s for s, _ in runs]
        label = f"headstart {command} --help".replace("  ", " ")
        print(
            f"| `{label}` | {statistics.median(seconds):.3f} s | {max(seconds):.3f} s "
            f"| {runs[0][1]} |"
        )


if __name__ == "__main__":
    main()
