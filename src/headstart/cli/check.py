"""``headstart check``: the data doctor. Reports everything odd about DATA; fails only
when asked to."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headstart.cli.common import EXIT_ERROR


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check", help="data doctor: unreadable files, duplicates and leaks, imbalance, tiny"
    )
    parser.add_argument("data", help="folder of class folders, train/+test/, CSV or IDX")
    parser.add_argument(
        "--out", default=".", help="folder for check.txt and check.json (default: current folder)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 2 when any file would be skipped"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from headstart.data.doctor import check_data, write_report

    diagnosis = check_data(args.data)
    words = args.words
    text_path, json_path = write_report(diagnosis, Path(args.out), words)
    print(diagnosis.to_text(words=words))
    print(f"wrote {text_path} and {json_path}")
    if args.strict and diagnosis.skipped:
        first = diagnosis.find("unreadable").details[0]
        print(
            f"headstart: error: --strict: {diagnosis.skipped} file(s) would be skipped, "
            f"first {first}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return 0
