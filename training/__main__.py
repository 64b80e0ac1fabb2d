"""`python -m training train|evaluate|export-onnx`: the training commands of `python -m core` under their
old name (the Train tab's subprocess, the README and tests use it). The commands live in core/cli/."""
from __future__ import annotations

import sys

COMMANDS = ["core.cli.train", "core.cli.evaluate", "core.cli.export_onnx"]


def main(argv: list[str] | None = None) -> int:
    from core.cli.common import main as tree
    return tree(argv, prog="python -m training", commands=COMMANDS,
                description="Hearsay student training and evaluation.")


if __name__ == "__main__":
    sys.exit(main())
