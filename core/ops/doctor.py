"""Workspace health: find what is broken and repair what is safe to repair.

Checks: SQLite integrity and foreign keys; recordings whose audio file is missing;
audio files no recording points at; half-written temp files; folders left by killed imports;
registered models whose files are gone; runs marked running whose process is dead;
catalogue vs Chroma counts. Repairs never delete user data: orphan audio is moved to
`lost+found/`, not removed. A lost or damaged catalogue is reported and nothing is repaired:
the way back is a backup, not a fresh catalogue.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.store.catalog import RESTORE_HINT, CatalogUnusable
from core.store.files import TEMP_MARK, is_temp
from core.store.processes import pid_alive
from core.store.workspace import Workspace

IMPORT_IDLE_SECONDS = 3600      # an import folder untouched this long belongs to no running import


@dataclass
class Finding:
    check: str
    ok: bool
    detail: str
    repaired: str = ""


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(f.ok or f.repaired for f in self.findings)

    def add(self, check: str, ok: bool, detail: str, repaired: str = "") -> Finding:
        finding = Finding(check, ok, detail, repaired)
        self.findings.append(finding)
        return finding

    def text(self) -> str:
        lines = []
        for f in self.findings:
            mark = "ok " if f.ok else ("fixed" if f.repaired else "BAD")
            lines.append(f"[{mark:5}] {f.check}: {f.detail}" + (f" → {f.repaired}" if f.repaired else ""))
        return "\n".join(lines)


def unusable_catalogue_report(exc: BaseException) -> DoctorReport:
    """What doctor says when the catalogue cannot even be opened (lost, truncated, not a database)."""
    report = DoctorReport()
    detail = str(exc) if isinstance(exc, CatalogUnusable) else f"the catalogue is damaged ({exc}): {RESTORE_HINT}"
    report.add("catalogue", False, f"{detail}; nothing was repaired")
    return report


def _referenced_audio(ws: Workspace) -> set[Path]:
    return {ws.audio_path(r.sha256) for r in ws.catalog.recordings()}


def doctor(ws: Workspace, repair: bool = False, check_index: bool = True) -> DoctorReport:
    try:
        damage = ws.catalog.damage()
        if damage:      # a damaged file's rows cannot be trusted: repairing from them could move the library out
            return unusable_catalogue_report(
                CatalogUnusable(f"SQLite integrity check failed ({'; '.join(damage[:3])}): {RESTORE_HINT}"))
        report = DoctorReport()
        _check_catalogue(ws, report, repair)
    except (CatalogUnusable, sqlite3.DatabaseError) as exc:
        if isinstance(exc, sqlite3.OperationalError):      # locked or disk full: not damage, say it as it is
            raise
        return unusable_catalogue_report(exc)
    _check_import_leftovers(ws, report, repair)
    if check_index:
        _check_index(ws, report, repair)
    return report


def _check_catalogue(ws: Workspace, report: DoctorReport, repair: bool) -> None:
    cat = ws.catalog
    problems = cat.foreign_key_problems()
    report.add("sqlite", not problems, "integrity and foreign keys ok" if not problems else "; ".join(problems[:5]))

    missing = [r for r in cat.recordings() if not ws.audio_path(r.sha256).exists()]
    report.add("audio files", not missing,
               f"{len(missing)} recording(s) have no audio file: " + ", ".join(r.original_name for r in missing[:5])
               if missing else "every recording has its audio file")

    _check_orphans(ws, report, repair)

    temps = [p for p in ws.root.rglob(f"*{TEMP_MARK}*") if p.is_file()]
    finding = report.add("temp files", not temps, f"{len(temps)} half-written temp file(s)" if temps else "none")
    if temps and repair:
        for p in temps:
            p.unlink(missing_ok=True)
        finding.repaired = "deleted"

    broken_models = [m for m in cat.models()
                     if not (Path(m.path) / "config.json").exists() or not any(Path(m.path).glob("*.safetensors"))]
    finding = report.add("model files", not broken_models,
                         f"{len(broken_models)} registered model(s) missing files: "
                         + ", ".join(m.id for m in broken_models) if broken_models else "all present")
    active = cat.active_model()
    if repair and active is not None and active in broken_models:
        cat.clear_active_model()
        finding.repaired = f"active model {active.id} was broken; search falls back to the shipped student"

    stale = [r for r in cat.runs() if r.status == "running" and not pid_alive(r.pid)]
    finding = report.add("training runs", not stale,
                         f"{len(stale)} run(s) marked running but their process is gone" if stale else "none stuck")
    if stale and repair:
        for r in stale:
            cat.update_run(r.id, status="failed", error="process vanished (marked by doctor)")
        finding.repaired = "marked failed; their last checkpoints stay usable with --resume"


def _check_orphans(ws: Workspace, report: DoctorReport, repair: bool) -> None:
    referenced = _referenced_audio(ws)
    stored = [p for p in ws.audio_dir.rglob("*.flac") if not is_temp(p)]
    orphans = [p for p in stored if p not in referenced]
    finding = report.add("orphan audio", not orphans,
                         f"{len(orphans)} audio file(s) no recording points at" if orphans else "none")
    if not orphans:
        return
    # A crash leaves a few orphans; more orphans than referenced files means the catalogue is what is missing.
    if len(orphans) > len(stored) - len(orphans):
        finding.detail += (f", more than the {len(stored) - len(orphans)} it does point at: the catalogue looks "
                           f"lost or replaced, so nothing is moved; {RESTORE_HINT}")
        return
    if repair:
        lost = ws.root / "lost+found"
        lost.mkdir(exist_ok=True)
        for p in orphans:
            shutil.move(str(p), lost / p.name)
        finding.repaired = f"moved to {lost}"


def _last_activity(folder: Path) -> float:
    """The newest modification time in a folder tree (an import writes into it while it runs)."""
    newest = folder.lstat().st_mtime
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
            except OSError:
                continue
    return newest


def _check_import_leftovers(ws: Workspace, report: DoctorReport, repair: bool) -> None:
    folders = [p for p in ws.cache_dir.glob("import-*") if p.is_dir()]
    now = time.time()
    stale = [p for p in folders if now - _last_activity(p) > IMPORT_IDLE_SECONDS]
    recent = len(folders) - len(stale)
    detail = f"{len(stale)} folder(s) in cache/ left by interrupted imports" if stale else "none"
    if recent:
        detail += f" ({recent} recent one(s) kept: an import may be running)"
    finding = report.add("import leftovers", not stale, detail)
    if stale and repair:
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        finding.repaired = "deleted"


def _check_index(ws: Workspace, report: DoctorReport, repair: bool) -> None:
    try:
        from core.pipeline import index
        embedder = index.resolve_embedder(ws, "active")
        col = index.open_collection(ws, embedder)
    except Exception as exc:  # noqa: BLE001 - a missing model or server is a finding, not a crash
        report.add("vector index", False, f"cannot open the active model's collection ({exc})")
        return
    clips, vectors = ws.catalog.stats().clips, col.count()
    current = index.is_current(ws, embedder)
    finding = report.add("vector index", current,
                         f"{vectors} vectors for {clips} clips in {col.name}" + ("" if current else " (out of date)"))
    if not current and repair:
        result = index.sync(ws, embedder)
        finding.repaired = f"re-synced: {result.summary()}"
