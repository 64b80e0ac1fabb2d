"""`python -m training COMMAND --help`: train, evaluate, ...

Each module in COMMANDS exposes `register(subparsers)` adding sub-command(s) with a `func(args) -> int` default.
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

COMMANDS: list[str] = [
    "training.cli_train",      # train
    "training.cli_evaluate",    # evaluate
    "training.export_onnx",    # export-onnx
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="Hearsay student training and evaluation.")
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
