"""Import throughput: kitchen20 (1070 real clips) into a fresh temporary workspace.

    python benchmarks/import_bench.py [--data DIR] [--quick]

Prints clips/s and, as its last line, a JSON object. Target: ≥ 50 clips/s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.pipeline.importer import import_paths  # noqa: E402
from core.store.settings import load_settings  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitchen20"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--quick", action="store_true", help="import only the first 200 files")
    args = parser.parse_args()
    paths = [args.data]
    if args.quick:
        paths = sorted((args.data / "audio").glob("*.flac"))[:200]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(tmp, load_settings(workspace=tmp))
        start = time.perf_counter()
        report = import_paths(ws, paths)
        seconds = time.perf_counter() - start
        again = time.perf_counter()
        import_paths(ws, paths)
        reimport = time.perf_counter() - again
    clips = report.clips
    print(f"imported {clips} clips from {report.count('imported')} files in {seconds:.1f} s "
          f"→ {clips / seconds:.0f} clips/s (target ≥ 50); re-import (all duplicates) {reimport:.1f} s; "
          f"{report.count('error')} errors")
    print(json.dumps({"bench": "import", "clips": clips, "seconds": round(seconds, 2),
                      "clips_per_s": round(clips / seconds, 1), "reimport_seconds": round(reimport, 2)}))


if __name__ == "__main__":
    main()
