"""Import audio into a workspace: files, folders (recursive), zips; meta.csv beside the audio.

Each file is checked, decoded, stored once (content-addressed) and recorded with its
windows in one transaction. A bad file is reported and skipped; the batch goes on.
"""
from __future__ import annotations

import csv
import shutil
import tempfile
import threading
import zipfile
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from core import audio
from core.workspace import Workspace

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif", ".au", ".m4a", ".webm"}
Progress = Callable[[int, int, str], None]


@dataclass
class FileResult:
    name: str
    status: str                  # imported | duplicate | error
    message: str = ""
    recording_id: int | None = None
    clips: int = 0


@dataclass
class ImportReport:
    results: list[FileResult] = field(default_factory=list)
    cancelled: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def clips(self) -> int:
        return sum(r.clips for r in self.results)

    def summary(self) -> str:
        text = (f"{self.count('imported')} imported ({self.clips} clips), "
                f"{self.count('duplicate')} already there, {self.count('error')} failed")
        return text + (" — cancelled, run again to continue" if self.cancelled else "")


@dataclass
class _Item:
    path: Path
    name: str                    # shown to the user and stored as original_name
    source: str
    meta: dict


def safe_name(name: str) -> str:
    """File names that are not valid UTF-8 become printable instead of failing the insert."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_meta_csv(path: Path) -> dict[str, dict]:
    """filename → the row's other columns (the shared/data format)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for row in rows:
        name = (row.pop("filename", None) or "").strip()
        if name:
            out[name] = {k: v for k, v in row.items() if k and v not in (None, "")}
    return out


def _meta_tables(folder: Path) -> list[tuple[Path, dict[str, dict]]]:
    return [(p.parent, read_meta_csv(p)) for p in sorted(folder.rglob("meta.csv"))]


def _lookup_meta(path: Path, tables: list[tuple[Path, dict[str, dict]]]) -> dict:
    for base, table in tables:
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            continue
        for key in (rel, path.name, rel.removeprefix("audio/")):
            if key in table:
                return dict(table[key])
    return {}


def _expand(paths: Iterable[str | Path], tmp: Path, report: ImportReport, source: str | None) -> list[_Item]:
    items: list[_Item] = []
    paths = [Path(p) for p in paths]
    # A .csv given beside loose files (e.g. uploaded together) is their meta.csv.
    loose_meta = [(p.parent, read_meta_csv(p)) for p in paths if p.suffix.lower() == ".csv" and p.is_file()]
    for path in paths:
        if path.suffix.lower() == ".csv" and path.is_file():
            continue
        if path.is_dir():
            tables = _meta_tables(path)
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                report.results.append(FileResult(safe_name(str(path)), "error", "folder holds no audio files"))
            for f in files:
                meta = _lookup_meta(f, tables)
                # a `dataset`/`source` column names where each clip came from (the bundled demo mixes sets)
                origin = source or meta.get("dataset") or meta.get("source") or path.resolve().name
                items.append(_Item(f, safe_name(f.relative_to(path).as_posix()), origin, meta))
        elif path.suffix.lower() == ".zip":
            items += _expand(_extract_zip(path, tmp / f"zip{len(items)}", report), tmp, report,
                             source or path.stem)
        elif path.is_file():
            tables = ([(path.parent, read_meta_csv(path.parent / "meta.csv"))]
                      if (path.parent / "meta.csv").exists() else []) + loose_meta
            meta = _lookup_meta(path, tables) or next(
                (dict(t[path.name]) for _, t in loose_meta if path.name in t), {})
            items.append(_Item(path, safe_name(path.name), source or "upload", meta))
        else:
            report.results.append(FileResult(safe_name(str(path)), "error", "no such file or folder"))
    return items


def _extract_zip(path: Path, dest: Path, report: ImportReport) -> list[Path]:
    """Extract a zip safely: entries that would land outside `dest` (zip-slip) are refused."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        report.results.append(FileResult(safe_name(path.name), "error", f"not a readable zip ({exc})"))
        return []
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            pure = PurePosixPath(info.filename.replace("\\", "/"))
            target = (dest / pure).resolve()
            if pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(root):
                report.results.append(FileResult(safe_name(info.filename), "error",
                                                 "refused: path escapes the archive (zip-slip)"))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                report.results.append(FileResult(safe_name(info.filename), "error", f"corrupt zip entry ({exc})"))
                target.unlink(missing_ok=True)
    return [dest]


@dataclass
class _Decoded:
    file_sha: str
    sha: str
    duration: float
    orig_sr: int


def _prepare(ws: Workspace, item: _Item) -> FileResult | _Decoded:
    """Check, decode and store one file's audio (safe to run in worker threads)."""
    s = ws.settings
    size = item.path.stat().st_size
    if size == 0:
        return FileResult(item.name, "error", "empty file (0 bytes)")
    if size > s.max_upload_mb * 1024 * 1024:
        return FileResult(item.name, "error", f"{size / 2**20:.0f} MB is over the {s.max_upload_mb:.0f} MB limit")
    if item.path.suffix.lower() not in AUDIO_EXTENSIONS:
        return FileResult(item.name, "error", f"unsupported file type '{item.path.suffix}'")
    file_sha = audio.file_hash(item.path)
    known = ws.catalog.recording_by_file_hash(file_sha)
    if known is not None:
        return FileResult(item.name, "duplicate", f"same file as {known.original_name}", known.id)
    try:
        wave, orig_sr = audio.decode(item.path)
    except audio.AudioError as exc:
        return FileResult(item.name, "error", str(exc))
    sha = audio.content_hash(wave)
    stored = ws.audio_path(sha)
    if not stored.exists():            # write the file before the row: the catalogue never points at nothing
        audio.write_flac(stored, wave)
    return _Decoded(file_sha, sha, len(wave) / audio.SAMPLE_RATE, orig_sr)


def _record(ws: Workspace, item: _Item, d: _Decoded) -> FileResult:
    """Add the recording and its windows in one transaction."""
    s = ws.settings
    wins = audio.windows(d.duration, s.window_seconds, s.overlap_seconds)
    rec, created = ws.catalog.add_recording(
        sha256=d.sha, original_name=item.name, source=item.source, duration=round(d.duration, 3),
        sample_rate=d.orig_sr, windows=[(w.start, w.end) for w in wins], meta=item.meta, file_sha256=d.file_sha)
    if not created:
        return FileResult(item.name, "duplicate", f"same audio as {rec.original_name}", rec.id)
    return FileResult(item.name, "imported", f"{d.duration:.1f} s, {len(wins)} clip(s)", rec.id, len(wins))


def import_one(ws: Workspace, item: _Item) -> FileResult:
    try:
        prepared = _prepare(ws, item)
        return prepared if isinstance(prepared, FileResult) else _record(ws, item, prepared)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
        return FileResult(item.name, "error", f"{type(exc).__name__}: {exc}")


def import_paths(ws: Workspace, paths: Iterable[str | Path], *, source: str | None = None,
                 progress: Progress | None = None, cancel: threading.Event | None = None,
                 workers: int = 2) -> ImportReport:
    """Import every audio file under `paths`. Safe to interrupt and run again: nothing is duplicated.

    Decoding runs on `workers` threads (libsndfile and soxr release the GIL); catalogue
    writes stay in this thread, in input order.
    """
    report = ImportReport()
    tmp = Path(tempfile.mkdtemp(prefix="import-", dir=ws.cache_dir))
    try:
        items = _expand(paths, tmp, report, source)
        counts = Counter(i.name for i in items)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            ahead: deque = deque()
            next_item = 0
            for done, item in enumerate(items):
                if progress:
                    progress(done, len(items), item.name)
                if cancel is not None and cancel.is_set():
                    report.cancelled = True
                    break
                while next_item < len(items) and next_item < done + 2 * max(1, workers):
                    ahead.append(pool.submit(_prepare, ws, items[next_item]))
                    next_item += 1
                try:
                    prepared = ahead.popleft().result()
                    result = prepared if isinstance(prepared, FileResult) else _record(ws, item, prepared)
                except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
                    result = FileResult(item.name, "error", f"{type(exc).__name__}: {exc}")
                if counts[item.name] > 1 and result.status == "imported":
                    result.message += " (another file in this batch has the same name)"
                report.results.append(result)
            for future in ahead:
                future.cancel()
        if progress and not report.cancelled:
            progress(len(items), len(items), "done")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def delete_clips(ws: Workspace, clip_ids: list[int]) -> int:
    """Delete clips (captions and reviews go with them) and any audio file no longer referenced.

    Their vectors leave the Chroma collections at the next index sync (searches sync first).
    """
    for sha in ws.catalog.delete_clips(clip_ids):
        ws.audio_path(sha).unlink(missing_ok=True)
    return len(clip_ids)


def seed_demo(ws: Workspace, demo_dir: Path | None = None, progress: Progress | None = None) -> ImportReport | None:
    """Import the bundled demo clips into an empty workspace (first launch)."""
    from core.settings import ASSETS
    demo_dir = demo_dir or ASSETS / "demo"
    if ws.catalog.stats().recordings or not demo_dir.is_dir():
        return None
    return import_paths(ws, [demo_dir], progress=progress)

