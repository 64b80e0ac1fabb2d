"""CLI: `doctor`, `backup`, `restore`."""
from __future__ import annotations

import sqlite3
import sys
import zipfile

from core.store.catalog import CatalogUnusable
from core.cli.common import command, workspace_from


def register(sub) -> None:
    p = command(sub, "doctor", func=cmd_doctor,
                help="check the workspace and repair what is safe",
                description="Checks SQLite integrity, missing and orphan audio, temp files, model files, "
                            "stuck training runs and catalogue vs Chroma counts. --repair fixes what is safe "
                            "(orphans go to lost+found/, nothing is deleted). Exit code 1 when problems remain.")
    p.add_argument("--repair", action="store_true", help="repair what is safe to repair")
    p.add_argument("--no-index", action="store_true", help="skip the vector-index check (no model loading)")

    p = command(sub, "backup", func=cmd_backup,
                help="back up the whole workspace to one zip",
                description="A consistent snapshot of the catalogue (SQLite online backup) plus audio, "
                            "models and runs. The Chroma store is rebuildable and left out unless --chroma.")
    p.add_argument("out", help="the .zip to write")
    p.add_argument("--chroma", action="store_true", help="include the embedded Chroma store")

    p = command(sub, "restore", func=cmd_restore, workspace=None,
                help="restore a backup zip into a new, empty workspace folder")
    p.add_argument("archive", help="a zip written by `backup`")
    p.add_argument("target", help="an empty or new folder")


def cmd_doctor(args) -> int:
    from core.ops.doctor import doctor, unusable_catalogue_report
    try:
        ws = workspace_from(args)
    except CatalogUnusable as exc:           # nothing to check against: say so, repair nothing
        report = unusable_catalogue_report(exc)
    else:
        report = doctor(ws, repair=args.repair, check_index=not args.no_index)
    print(report.text())
    print("healthy" if report.healthy else "problems remain: run with --repair, or see above")
    return 0 if report.healthy else 1


def _failed(what: str, exc: BaseException) -> int:
    """One line on stderr for a refusal or an environment failure (disk full, permissions), no traceback."""
    print(f"{what} failed: {exc}", file=sys.stderr)
    return 1


def cmd_backup(args) -> int:
    from core.ops.backup import backup
    try:
        out = backup(workspace_from(args), args.out, include_chroma=args.chroma)
    except (ValueError, OSError, sqlite3.Error) as exc:
        return _failed("backup", exc)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


def cmd_restore(args) -> int:
    from core.ops.backup import restore
    try:
        ws = restore(args.archive, args.target)
    except (ValueError, OSError, zipfile.BadZipFile, sqlite3.Error) as exc:
        return _failed("restore", exc)
    s = ws.catalog.stats()
    print(f"restored {s.recordings} recordings, {s.clips} clips into {ws.root}")
    return 0
