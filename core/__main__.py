"""`python -m core COMMAND --help`: every command a tab offers, from the shell.

Each module in COMMANDS exposes `register(subparsers)`, adding its sub-command(s)
with a `func(args) -> int` default.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Idle OpenMP threads sleep instead of spinning: on shared cores spinning made a text query 17× slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

COMMANDS = [
    "core.cli.library",      # import, stats
    "core.cli.caption",      # caption
    "core.cli.ops",          # doctor, backup, restore
    "core.cli.search",       # index, search
    "core.cli.review",       # export, import-export, review-stats
    "core.cli.project",      # project (UMAP map as HTML)
    "core.cli.access",       # hash-password, users
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="Hearsay: build text-to-sound search from unlabelled audio.")
    parser.add_argument("--workspace", help="workspace folder (default: $HEARSAY_WORKSPACE or ./workspace)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    args = parser.parse_args(argv)
    from core.store.catalog import CatalogUnusable
    try:
        return int(args.func(args) or 0)
    except CatalogUnusable as exc:      # a lost or damaged catalogue: one line that says how to recover
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
