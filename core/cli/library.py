"""CLI: `import` and `stats`."""
from __future__ import annotations

import json

from core.cli.common import RERUN, cancel_on_interrupt, command, progress_bar, workspace_from
from core.pipeline.importer import import_paths, printable


def register(sub) -> None:
    p = command(sub, "import", func=cmd_import, interrupted=RERUN,
                help="import files, folders or zips into the workspace",
                description="Import audio (wav/flac/ogg/mp3/…, folders recursively, zips). "
                            "A meta.csv beside the audio (filename + any columns) becomes metadata. "
                            "Re-running skips what is already imported.")
    p.add_argument("paths", nargs="+", help="files, folders or .zip archives")
    p.add_argument("--source", help="source/dataset name to record (default: folder or zip name)")
    p.add_argument("--verbose", action="store_true", help="print one line per file")

    command(sub, "stats", func=cmd_stats, json="print JSON",
            help="counts of recordings, clips, hours, captioned and reviewed clips")


def cmd_import(args) -> int:
    ws = workspace_from(args)
    bar, progress = progress_bar("file")
    with cancel_on_interrupt(bar) as cancel:
        report = import_paths(ws, args.paths, source=args.source, progress=progress, cancel=cancel)
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
