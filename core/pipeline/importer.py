"""Import audio into a workspace: files, folders (recursive), zips; meta.csv beside the audio.

Each file is checked, decoded, stored once (content-addressed) and recorded with its
windows in one transaction. A bad file is reported and skipped; the batch goes on.
"""
from __future__ import annotations

import csv
import re
import shutil
import stat
import tempfile
import threading
import zipfile
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from core.store import audio
from core.store.files import extract_entries, megabytes, plan_zip, zip_budget
from core.store.workspace import Workspace

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus", ".aiff", ".aif", ".au", ".m4a", ".webm"}
Progress = Callable[[int, int, str], None]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")   # what could break line-based output


@dataclass
class FileResult:
    name: str
    status: str                  # imported | duplicate | error | warning (a problem beside the audio)
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
        if self.count("warning"):
            text += f", {self.count('warning')} warning(s)"
        return text + (" — cancelled, run again to continue" if self.cancelled else "")


@dataclass
class _Item:
    path: Path
    name: str                    # shown to the user and stored as original_name
    source: str
    meta: dict


def safe_name(name: str) -> str:
    """Names as stored and printed: invalid UTF-8 and control characters (newlines, escapes)
    become U+FFFD, so a file name can neither fail the insert nor break line-based output."""
    return printable(name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def printable(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


def read_meta_csv(path: Path, problems: list[str] | None = None) -> dict[str, dict]:
    """filename → the row's other columns (the shared/data format).

    A bad row (e.g. a field over the csv module's 128 KiB limit) is skipped, not fatal; it, a missing
    `filename` column and a repeated column are described in `problems`.
    """
    problems = [] if problems is None else problems
    out: dict[str, dict] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh)
            header: list[str] | None = None
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    if header is None:
                        problems.append(f"unreadable header ({exc}); this meta.csv was not used")
                        return {}
                    problems.append(f"line {reader.line_num}: {exc}; row skipped")
                    continue
                if not row:                              # blank lines, as csv.DictReader skips them
                    continue
                if header is None:
                    header = [h.strip() for h in row]
                    _check_header(header, problems)
                    continue
                record = dict(zip(header, row))          # a repeated column: the last one wins
                name = (record.pop("filename", None) or "").strip()
                if name:
                    out[name] = {k: v for k, v in record.items() if k and v not in (None, "")}
    except OSError as exc:
        problems.append(f"cannot read ({exc.strerror or exc}); this meta.csv was not used")
    return out


def _check_header(header: list[str], problems: list[str]) -> None:
    if "filename" not in header:
        problems.append(f"no 'filename' column (columns: {', '.join(header)[:200]}); its metadata was not used")
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:
        problems.append(f"repeats the column(s) {', '.join(map(repr, repeated))}; the last one is used")


def _read_meta(path: Path, shown_as: str, report: ImportReport) -> dict[str, dict]:
    """read_meta_csv, with its problems reported as one warning for the file."""
    problems: list[str] = []
    table = read_meta_csv(path, problems)
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        report.results.append(FileResult(safe_name(shown_as), "warning", "; ".join(problems[:3]) + more))
    return table


def _meta_tables(folder: Path, report: ImportReport) -> list[tuple[Path, dict[str, dict]]]:
    return [(p.parent, _read_meta(p, p.relative_to(folder).as_posix(), report))
            for p in sorted(folder.rglob("meta.csv"))]


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


def _expand(paths: Iterable[str | Path], tmp: Path, report: ImportReport, source: str | None,
            max_bytes: int) -> list[_Item]:
    items: list[_Item] = []
    paths = [Path(p) for p in paths]
    # A .csv given beside loose files (e.g. uploaded together) is their meta.csv.
    loose_meta = [(p.parent, _read_meta(p, p.name, report)) for p in paths
                  if p.suffix.lower() == ".csv" and p.is_file()]
    for path in paths:
        if path.suffix.lower() == ".csv" and path.is_file():
            continue
        if path.is_dir():
            items += _expand_folder(path, report, source)
        elif path.suffix.lower() == ".zip" and path.is_file():
            dest = tmp / f"zip{len(items)}"
            if _extract_zip(path, dest, report, max_bytes):
                items += _expand_folder(dest, report, source or path.stem, shown_as=path.name)
        elif path.exists():                 # anything else that exists is checked (and refused) by _prepare
            tables = ([(path.parent, _read_meta(path.parent / "meta.csv", "meta.csv", report))]
                      if (path.parent / "meta.csv").exists() else []) + loose_meta
            meta = _lookup_meta(path, tables) or next(
                (dict(t[path.name]) for _, t in loose_meta if path.name in t), {})
            items.append(_Item(path, safe_name(path.name), source or "upload", meta))
        else:
            report.results.append(FileResult(safe_name(str(path)), "error", "no such file or folder"))
    return items


def _expand_folder(path: Path, report: ImportReport, source: str | None,
                   shown_as: str | None = None) -> list[_Item]:
    tables = _meta_tables(path, report)
    entries = sorted(p for p in path.rglob("*") if not p.is_dir())
    for z in (p for p in entries if p.suffix.lower() == ".zip"):
        # not opened: a zip in a folder may hold more zips (and bombs); the user can import it on its own
        report.results.append(FileResult(safe_name(z.relative_to(path).as_posix()), "warning",
                                         "skipped: zips inside a folder are not opened; import the zip itself"))
    files = [p for p in entries if p.suffix.lower() in AUDIO_EXTENSIONS]
    if not files:
        report.results.append(FileResult(safe_name(shown_as or str(path)), "error",
                                         f"{'zip' if shown_as else 'folder'} holds no audio files"))
    items = []
    for f in files:
        meta = _lookup_meta(f, tables)
        # a `dataset`/`source` column names where each clip came from (the bundled demo mixes sets)
        origin = source or meta.get("dataset") or meta.get("source") or path.resolve().name
        items.append(_Item(f, safe_name(f.relative_to(path).as_posix()), origin, meta))
    return items


def _extract_zip(path: Path, dest: Path, report: ImportReport, max_bytes: int) -> bool:
    """Extract a zip safely: what plan_zip refuses is reported and never written. False: nothing to import."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        report.results.append(FileResult(safe_name(path.name), "error", f"not a readable zip ({exc})"))
        return False
    dest.mkdir(parents=True, exist_ok=True)
    with archive:
        keep, refused = plan_zip(archive, dest, max_bytes, zip_budget(path, max_bytes))
        refused += extract_entries(archive, keep, max_bytes)
    for name, why in refused:
        report.results.append(FileResult(safe_name(name), "error", why))
    return bool(keep) or not refused         # an empty zip still says "holds no audio files"


def max_file_bytes(ws: Workspace) -> int:
    """The per-file limit (settings' max_upload_mb), on files, zip entries and decoded audio alike."""
    return int(ws.settings.max_upload_mb * 2**20)


@dataclass
class _Decoded:
    file_sha: str
    sha: str
    duration: float
    orig_sr: int


def _prepare(ws: Workspace, item: _Item) -> FileResult | _Decoded:
    """Check, decode and store one file's audio (safe to run in worker threads)."""
    limit = max_file_bytes(ws)
    try:
        info = item.path.stat()
    except OSError as exc:                         # e.g. a dangling symlink
        return FileResult(item.name, "error", f"cannot read ({exc.strerror or type(exc).__name__})")
    if not stat.S_ISREG(info.st_mode):             # a FIFO would block, a device would never end
        return FileResult(item.name, "error", "not a regular file")
    size = info.st_size
    if size == 0:
        return FileResult(item.name, "error", "empty file (0 bytes)")
    if size > limit:
        return FileResult(item.name, "error", f"{megabytes(size)} is over the {megabytes(limit)} limit")
    if item.path.suffix.lower() not in AUDIO_EXTENSIONS:
        return FileResult(item.name, "error", f"unsupported file type '{item.path.suffix}'")
    file_sha = audio.file_hash(item.path)
    known = ws.catalog.recording_by_file_hash(file_sha)
    if known is not None:
        return FileResult(item.name, "duplicate", f"same file as {known.original_name}", known.id)
    try:
        wave, orig_sr = audio.decode(item.path, max_bytes=limit)   # the decoded size is capped too
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
        items = _expand(paths, tmp, report, source, max_file_bytes(ws))
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


DEMO_CAPTIONS = "teacher_captions.jsonl"     # the embedded teacher's captions of the demo (scripts/demo_captions.py)


def seed_demo(ws: Workspace, demo_dir: Path | None = None, progress: Progress | None = None) -> ImportReport | None:
    """Import the bundled demo clips into an empty workspace (first launch), with the embedded teacher's
    captions of them, pending review: search then fuses captions from the first query (visitors can not
    run a teacher), and Review has work to show. Running the same teacher later finds them done."""
    from core.store.settings import ASSETS
    demo_dir = demo_dir or ASSETS / "demo"
    if ws.catalog.stats().recordings or not demo_dir.is_dir():
        return None
    report = import_paths(ws, [demo_dir], progress=progress)
    if (demo_dir / DEMO_CAPTIONS).is_file():
        from core.pipeline import captioning
        captioning.restore_outputs(ws, captioning.read_outputs(demo_dir / DEMO_CAPTIONS))
    return report

