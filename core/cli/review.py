"""CLI: `export`, `import-export` and `review-stats` (what the Review tab's export, import and counters do)."""
from __future__ import annotations

import json
import threading

from core.pipeline import review
from core.cli.library import _add_workspace, workspace_from
from core.pipeline.export import FORMATS, IMPORT_ACTOR, export, import_export
from core.pipeline.importer import printable


def register(sub) -> None:
    p = sub.add_parser("export", help="export captions with provenance and audio (jsonl, csv or a HF datasets folder)",
                       description="Write each captioned or reviewed clip's audio (16 kHz FLAC) with its caption, "
                                   "provenance and review. jsonl: DIR/metadata.jsonl + DIR/audio/; csv: DIR/meta.csv + "
                                   "DIR/audio/; hf: a datasets folder for datasets.load_from_disk(DIR). "
                                   "DIR must be new or empty.")
    p.add_argument("dir", help="output folder (new or empty)")
    p.add_argument("--format", choices=FORMATS, default="jsonl")
    p.add_argument("--status", action="append", choices=["pending", "accepted", "edited", "rejected", "skipped"],
                   help="only clips with this review status (repeatable; default: all captioned clips)")
    _add_workspace(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import-export", help="restore an export (any format) into this workspace, reviews included",
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
    _add_workspace(p)
    p.set_defaults(func=cmd_import_export)

    p = sub.add_parser("review-stats", help="review progress overall and per annotator")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_workspace(p)
    p.set_defaults(func=cmd_review_stats)


def _bar():
    from tqdm import tqdm
    bar = tqdm(unit="clip")

    def progress(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name[-40:])
        bar.refresh()
    return bar, progress


def cmd_export(args) -> int:
    ws = workspace_from(args)
    bar, progress = _bar()
    cancel = threading.Event()
    try:
        report = export(ws, args.dir, args.format, statuses=args.status, progress=progress, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        print("interrupted: nothing was written")
        return 130
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    finally:
        bar.close()
    print(report.summary())
    return 1 if report.errors and not report.count else 0


def cmd_import_export(args) -> int:
    ws = workspace_from(args)
    bar, progress = _bar()
    cancel = threading.Event()
    try:
        report = import_export(ws, args.dir, importer=args.annotator, keep_authors=args.keep_authors,
                               progress=progress, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        print("interrupted: run the same command again to continue")
        return 130
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(printable(f"error: {exc}"))
        return 2
    finally:
        bar.close()
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
