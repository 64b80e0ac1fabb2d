"""CLI: `export`, `import-export` and `review-stats` (what the Review tab's export, import and counters do)."""
from __future__ import annotations

import json

from core.cli.common import RERUN, cancel_on_interrupt, command, progress_bar, workspace_from
from core.pipeline import review
from core.pipeline.export import FORMATS, IMPORT_ACTOR, export, import_export
from core.pipeline.importer import printable


def register(sub) -> None:
    p = command(sub, "export", func=cmd_export, interrupted="interrupted: nothing was written",
                help="export captions with provenance and audio (jsonl, csv or a HF datasets folder)",
                description="Write each captioned or reviewed clip's audio (16 kHz FLAC) with its caption, "
                            "provenance and review. jsonl: DIR/metadata.jsonl + DIR/audio/; csv: DIR/meta.csv + "
                            "DIR/audio/; hf: a datasets folder for datasets.load_from_disk(DIR). "
                            "DIR must be new or empty.")
    p.add_argument("dir", help="output folder (new or empty)")
    p.add_argument("--format", choices=FORMATS, default="jsonl")
    p.add_argument("--status", action="append", choices=["pending", "accepted", "edited", "rejected", "skipped"],
                   help="only clips with this review status (repeatable; default: all captioned clips)")

    p = command(sub, "import-export", func=cmd_import_export, interrupted=RERUN,
                help="restore an export (any format) into this workspace, reviews included",
                description="Each exported clip becomes a recording with the same captions, review and "
                            "history. Running it again skips what is already there. The restored decisions, "
                            "captions and events are recorded as made by --annotator now (the names and times "
                            "in the export stay as provenance text), unless --keep-authors.")
    p.add_argument("dir", help="a folder written by `export`")
    p.add_argument("--annotator", default=IMPORT_ACTOR,
                   help=f"the name the restored reviews are recorded under (default: {IMPORT_ACTOR!r})")
    p.add_argument("--keep-authors", action="store_true",
                   help="restore the original annotators, times and versions as they are in the export "
                        "(moving your own workspace; the export must be trusted)")

    command(sub, "review-stats", func=cmd_review_stats, json="print JSON",
            help="review progress overall and per annotator")


def cmd_export(args) -> int:
    ws = workspace_from(args)
    bar, progress = progress_bar()
    try:
        with cancel_on_interrupt(bar) as cancel:
            report = export(ws, args.dir, args.format, statuses=args.status, progress=progress, cancel=cancel)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    print(report.summary())
    return 1 if report.errors and not report.count else 0


def cmd_import_export(args) -> int:
    ws = workspace_from(args)
    bar, progress = progress_bar()
    try:
        with cancel_on_interrupt(bar) as cancel:
            report = import_export(ws, args.dir, importer=args.annotator, keep_authors=args.keep_authors,
                                   progress=progress, cancel=cancel)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(printable(f"error: {exc}"))
        return 2
    for error in report.errors:
        print(printable(f"error     {error}"))
    print(printable(report.summary()))
    return 1 if report.errors and not report.imported and not report.duplicates else 0


def cmd_review_stats(args) -> int:
    p = review.progress(workspace_from(args).catalog)
    data = {"total": p.total, "reviewed": p.reviewed, "by_status": p.by_status, "by_annotator": p.by_annotator}
    if args.json:
        print(json.dumps(data))
    else:
        print(f"clips {p.total}  reviewed {p.reviewed}  by status {p.by_status}")
        for who, counts in sorted(p.by_annotator.items()):
            print(f"  {who}: {counts}")
    return 0
