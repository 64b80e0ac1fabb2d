"""CLI: `import` and `stats`."""
from __future__ import annotations

import argparse
import json
import threading

from core.pipeline.importer import import_paths, printable
from core.store.workspace import Workspace


def workspace_from(args) -> Workspace:
    return Workspace(getattr(args, "workspace", None) or None)


def _add_workspace(p: argparse.ArgumentParser) -> None:
    # Accepted after the sub-command too: `python -m core import X --workspace W`.
    p.add_argument("--workspace", default=argparse.SUPPRESS, help="workspace folder")


def register(sub) -> None:
    p = sub.add_parser("import", help="import files, folders or zips into the workspace",
                       description="Import audio (wav/flac/ogg/mp3/…, folders recursively, zips). "
                                   "A meta.csv beside the audio (filename + any columns) becomes metadata. "
                                   "Re-running skips what is already imported.")
    p.add_argument("paths", nargs="+", help="files, folders or .zip archives")
    p.add_argument("--source", help="source/dataset name to record (default: folder or zip name)")
    p.add_argument("--verbose", action="store_true", help="print one line per file")
    _add_workspace(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("stats", help="counts of recordings, clips, hours, captioned and reviewed clips")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_workspace(p)
    p.set_defaults(func=cmd_stats)


def cmd_import(args) -> int:
    from tqdm import tqdm
    ws = workspace_from(args)
    bar = tqdm(unit="file")

    def progress(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name[-40:])
        bar.refresh()

    cancel = threading.Event()
    try:
        report = import_paths(ws, args.paths, source=args.source, progress=progress, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        print("interrupted: run the same command again to continue")
        return 130
    finally:
        bar.close()
    for r in report.results:
        if args.verbose or r.status in ("error", "warning"):
            print(printable(f"{r.status:9} {r.name}: {r.message}"))     # one line per file, whatever the names
    print(report.summary())
    return 1 if report.count("error") and not report.count("imported") and not report.count("duplicate") else 0


def cmd_stats(args) -> int:
    s = workspace_from(args).catalog.stats()
    if args.json:
        print(json.dumps(s.__dict__))
    else:
        print(f"recordings {s.recordings}  clips {s.clips}  hours {s.hours:.2f}  "
              f"captioned {s.captioned}  reviewed {s.reviewed}  by status {s.by_status}")
    return 0
