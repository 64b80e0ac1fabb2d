"""Back up a whole workspace to one zip, and restore it into an empty folder.

The catalogue is copied with SQLite's online backup API, so a backup taken while the
app runs is a consistent snapshot. `cache/` is left out (derived); `chroma/` too unless
asked, since `python -m core index` rebuilds it from the catalogue.

A backup is written outside the workspace (it would otherwise include itself), only after
checking there is room, and as a `.partial` file renamed into place when complete. A restore
unpacks into a hidden folder beside the target, checks it, and only then renames it into
place: a bad archive leaves the target as it was, so a retry works.
"""
from __future__ import annotations

import secrets
import shutil
import sqlite3
import tempfile
import uuid
import zipfile
from pathlib import Path

from core.store.catalog import MIGRATIONS
from core.store.files import atomic_write, extract_entries, is_temp, plan_zip
from core.store.workspace import Workspace

SKIP = {"cache", "catalog.db", "catalog.db-wal", "catalog.db-shm"}
PARTIAL = ".partial"
ZIP_OVERHEAD_PER_FILE = 1024        # local header + central directory entry, generously
SPACE_MARGIN = 16 * 2**20           # never plan to fill a disk to the last byte


class BackupError(ValueError):
    """A backup or restore that cannot go ahead; the message says why and what to do."""


# -- backup -------------------------------------------------------------------------------------------------

def backup(ws: Workspace, out: str | Path, include_chroma: bool = False) -> Path:
    out = Path(out).expanduser().resolve()
    if out.is_relative_to(ws.root):
        raise BackupError(f"{out} is inside the workspace {ws.root}: write the backup outside it "
                          "(a backup inside would include itself)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = _snapshot_catalogue(ws, Path(tmp) / "catalog.db")
        files = _files_to_back_up(ws, include_chroma)
        needed = snapshot.stat().st_size + sum(size for _, _, size in files) \
            + ZIP_OVERHEAD_PER_FILE * (len(files) + 1)
        _check_free_space(out.parent, needed, "the backup")
        with atomic_write(out, tmp=out.with_name(out.name + PARTIAL)) as partial, \
                zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as zf:   # FLAC is compressed already
            zf.write(snapshot, "catalog.db")
            for path, name, _ in files:
                zf.write(path, name)
    return out


def _snapshot_catalogue(ws: Workspace, dest: Path) -> Path:
    src = sqlite3.connect(ws.root / "catalog.db")
    dst = sqlite3.connect(dest)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()
    return dest


def _files_to_back_up(ws: Workspace, include_chroma: bool) -> list[tuple[Path, str, int]]:
    """(path, name in the zip, size) of every file to include: no derived data, no half-written files."""
    skip = SKIP | (set() if include_chroma else {"chroma"})
    files = []
    for path in sorted(ws.root.rglob("*")):
        rel = path.relative_to(ws.root)
        if rel.parts[0] in skip or is_temp(path) or path.name.endswith(PARTIAL) or not path.is_file():
            continue
        files.append((path, rel.as_posix(), path.stat().st_size))
    return files


def _check_free_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed + SPACE_MARGIN > free:
        raise BackupError(f"not enough free space in {folder} for {what}: it needs about "
                          f"{(needed + SPACE_MARGIN) / 2**20:.0f} MB and {free / 2**20:.0f} MB are free")


# -- restore ------------------------------------------------------------------------------------------------

def restore(archive: str | Path, target: str | Path) -> Workspace:
    """Unpack a backup into an empty (or new) folder and check the catalogue opens."""
    target = Path(target).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} is not empty: restore into a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.restoring-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        _unpack_checked(Path(archive), staging)
        _check_catalogue_file(staging / "catalog.db", archive)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    ws = Workspace(target)          # opening it migrates older catalogues (paths become relative to here)
    _give_new_identity(ws)
    return ws


def _unpack_checked(archive: Path, staging: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise BackupError(f"{archive} is not a zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        if "catalog.db" not in {i.filename for i in infos}:
            raise BackupError(f"{archive} is not a Hearsay backup (no catalog.db)")
        keep, refused = plan_zip(zf, staging)          # the shared zip-slip / symlink / duplicate guard
        if refused:
            raise BackupError(f"refusing the backup, entry {refused[0][0]!r}: {refused[0][1]}")
        _check_free_space(staging, sum(i.file_size for i in infos), "the restore")
        failed = extract_entries(zf, keep)             # each entry capped at its declared size
        if failed:
            raise BackupError(f"the backup is damaged, entry {failed[0][0]!r}: {failed[0][1]}")


def _check_catalogue_file(db: Path, archive: str | Path) -> None:
    """The unpacked catalog.db must be a sound Hearsay catalogue this version can open."""
    try:
        con = sqlite3.connect(db)
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            problems = [r[0] for r in con.execute("PRAGMA integrity_check") if r[0] != "ok"]
            problems += [f"{r[0]} row {r[1]} points at a missing {r[2]}" for r in con.execute("PRAGMA foreign_key_check")]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the catalog.db in {archive} is not a Hearsay catalogue ({exc})") from None
    if version < 1 or "recordings" not in tables:
        raise BackupError(f"the catalog.db in {archive} is not a Hearsay catalogue (no recordings table)")
    if version > len(MIGRATIONS):
        raise BackupError(f"the backup's catalogue has schema v{version}, newer than this Hearsay "
                          f"(v{len(MIGRATIONS)}): restore it with a newer Hearsay")
    if problems:
        raise BackupError(f"the backup's catalogue is damaged: {'; '.join(problems[:3])}")


def _move_into_place(staging: Path, target: Path) -> None:
    existed = target.exists()
    if existed:
        target.rmdir()              # checked empty above; a rename cannot replace a folder everywhere
    try:
        staging.rename(target)
    except OSError:
        if existed:
            target.mkdir(exist_ok=True)
        raise


def _give_new_identity(ws: Workspace) -> None:
    """A copy gets its own workspace id: on a shared Chroma server (chroma_mode=http) collection names
    carry it, and the original and the copy must not write into each other's vectors."""
    old = ws.catalog.get_value("workspace_id")
    new = uuid.uuid4().hex[:8]
    ws.catalog.set_value("workspace_id", new)
    if old and ws.settings.chroma_mode == "embedded" and any(ws.chroma_dir.iterdir()):
        _rename_collections(ws, f"hs-{old}-", f"hs-{new}-")


def _rename_collections(ws: Workspace, old_prefix: str, new_prefix: str) -> None:
    """Keep a restored embedded store usable under the new id (its vectors are unchanged)."""
    from core.pipeline import index
    try:
        for col in index.get_client(ws).list_collections():
            if col.name.startswith(old_prefix):
                col.modify(name=new_prefix + col.name[len(old_prefix):])
    except Exception:  # noqa: BLE001 - vectors are derived: `python -m core index` rebuilds what is not renamed
        pass
