"""``headstart check``: the data doctor. Reports everything odd about DATA; with
``--strict``, an error finding (an unreadable image, fewer than 2 classes) makes it fail."""

from __future__ import annotations

import argparse
import sys

from headstart.cli.arguments import (
    add_dicom_arguments,
    add_max_pixels_argument,
    add_out_argument,
    add_strict_argument,
    decode_options,
)
from headstart.cli.common import EXIT_ERROR
from headstart.errors import respell


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check", help="data doctor: unreadable files, duplicates and leaks, imbalance, tiny"
    )
    parser.add_argument("data", help="folder of class folders, train/+test/, a CSV or IDX files")
    add_strict_argument(parser)
    add_max_pixels_argument(parser)
    add_dicom_arguments(parser)
    add_out_argument(parser, "check", makes_files=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from headstart.data.doctor import check_data, write_report

    diagnosis = check_data(args.data, options=decode_options(args))
    print(diagnosis.to_text(words=args.words))
    if args.out is not None:
        text_path, json_path = write_report(diagnosis, args.out, args.words)
        print(f"wrote {text_path} and {json_path}")
    errors = [finding for finding in diagnosis.findings if finding.severity == "error"]
    if args.strict and errors:
        if errors[0].kind == "unreadable":
            first = respell(errors[0].details[0], args.words)
            problem = f"{diagnosis.skipped} file(s) would be skipped, first {first}"
        else:
            problem = errors[0].summary
        print(f"headstart: error: --strict: {problem}", file=sys.stderr)
        return EXIT_ERROR
    return 0
