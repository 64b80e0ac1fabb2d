"""`python -m core COMMAND --help`: every command a tab offers, from the shell.

Each module in COMMANDS exposes `register(subparsers)`, adding its sub-command(s)
with a `func(args) -> int` default.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

COMMANDS = [
    "core.cli_library",      # import, stats
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="Hearsay: build text-to-sound search from unlabelled audio.")
    parser.add_argument("--workspace", help="workspace folder (default: $HEARSAY_WORKSPACE or ./workspace)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
