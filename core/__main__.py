"""`python -m core COMMAND --help`: every command a tab offers, from the shell (the tree: core/cli/common.py)."""
from __future__ import annotations

import sys

from core.cli.common import main

if __name__ == "__main__":
    sys.exit(main())
