"""Back up a whole workspace to one zip, and restore it into an empty folder.

The catalogue is copied with SQLite's online backup API, so a backup taken while the
app runs is a consistent snapshot. `cache/` is left out (derived); `chroma/` too unless
asked, since `python -m core index` rebuilds it from the catalogue.
"""
from __future__ import annotations

import sqlite3
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from core.workspace import Workspace

SKIP = {"cache", "catalog.db", "catalog.db-wal", "catalog.db-shm"}


def backup(ws: Workspace, out: str | Path, include_chroma: bool = False) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    skip = SKIP | (set() if include_chroma else {"chroma"})
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / "catalog.db"
        src = sqlite3.connect(ws.root / "catalog.db")
        dst = sqlite3.connect(snapshot)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        partial = out.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as zf:   # FLAC is compressed already
            zf.write(snapshot, "catalog.db")
            for path in sorted(ws.root.rglob("*")):
                rel = path.relative_to(ws.root)
                if path.is_file() and rel.parts[0] not in skip and ".tmp." not in path.name:
                    zf.write(path, rel.as_posix())
        partial.replace(out)
    return out


def restore(archive: str | Path, target: str | Path) -> Workspace:
    """Unpack a backup into an empty (or new) folder and check the catalogue opens."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty: restore into a new folder")
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        if "catalog.db" not in names:
            raise ValueError(f"{archive} is not a Hearsay backup (no catalog.db)")
        for name in names:
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or not (root / pure).resolve().is_relative_to(root):
                raise ValueError(f"refusing unsafe path in backup: {name}")
        zf.extractall(target)
    ws = Workspace(target)
    problems = ws.catalog.integrity_problems()
    if problems:
        raise ValueError(f"restored catalogue is damaged: {problems[:3]}")
    return ws
