"""``headstart backbones``: what can be loaded on this machine, and from where."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("backbones", help="list the backbones this machine can load")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from headstart.backbones.registry import list_backbones

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
