"""Import a Hearsay export into a workspace: unpack an uploaded zip, read the records (jsonl, csv
or a `datasets` folder), and restore each clip with its captions, review, events and annotations.

An export is untrusted input when someone uploads it: only regular files inside the export folder
are read (size-capped), and the person importing is recorded as the author of every restored
decision, caption and event, with the names and times the file claims kept as provenance text.
Only `keep_authors=True` (admins and the CLI) restores the original identities as they were.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from core.pipeline.export_format import Outcome, unflat
from core.pipeline.importer import delete_clips, max_file_bytes, printable, safe_name
from core.store import audio
from core.store.catalog import REVIEW_STATUSES, now
from core.store.files import extract_entries, megabytes, plan_zip, zip_budget
from core.store.workspace import Workspace

IMPORT_ACTOR = "import"       # who an import is recorded as when nobody signed in (the CLI), like "consensus"
OUTSIDE = "refused: the audio path points outside the export"   # the same whether or not the target exists
CAPTION_ORIGINS = ("teacher", "annotator", "import")
Progress = Callable[[int, int, str], None]


@dataclass
class ImportExportReport(Outcome):
    imported: int = 0
    duplicates: int = 0

    def summary(self) -> str:
        return self._summary(f"restored {self.imported} clips with their captions and reviews, "
                             f"{self.duplicates} already there", ", ", "cancelled, run again to continue")


def extract_zip(archive: str | Path, dest: str | Path, *, max_mb: float | None = None) -> Path:
    """Unpack a zipped export (as the Review tab uploads it). Nothing is written when any entry would
    escape `dest` (zip-slip), unpack past `max_mb` (settings' max_upload_mb), or take the total past
    what a zip of this size may hold (a decompression bomb): the whole upload is refused."""
    import zipfile

    from core.store.settings import Settings
    limit = int((Settings.max_upload_mb if max_mb is None else max_mb) * 2**20)
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"not a readable zip ({exc})") from None
    with zf:
        keep, refused = plan_zip(zf, dest, limit, zip_budget(Path(archive), limit))
        if refused:
            name, why = refused[0]
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise ValueError(f"{printable(name)!r}: {why}{more}")
        failed = extract_entries(zf, keep, limit)
        if failed:
            raise ValueError(f"{printable(failed[0][0])!r}: {failed[0][1]}")
    # a zip of the export folder itself holds one top folder: the export is inside it
    entries = [p for p in dest.iterdir() if not p.name.startswith("__MACOSX")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def detect_format(src: Path) -> str:
    if (src / "dataset_info.json").exists() or (src / "state.json").exists():
        return "hf"
    if (src / "metadata.jsonl").exists():
        return "jsonl"
    if (src / "meta.csv").exists():
        return "csv"
    raise FileNotFoundError(f"{src} holds no Hearsay export (metadata.jsonl, meta.csv or a datasets folder)")


@dataclass
class _Entry:
    """One exported clip as read: its record and where its audio is, or why it could not be read."""
    label: str
    record: dict | None = None
    audio: str | bytes | None = None      # a path relative to the export (jsonl/csv) or the bytes (hf)
    error: str = ""


def _label(value, fallback: str) -> str:
    return printable(str(value))[:200] if value not in (None, "") else fallback


def _read_export(src: Path, fmt: str) -> tuple[int, Iterator[_Entry]]:
    """(how many, the entries): a line or row that cannot be read is an entry with an error, not a stop."""
    if fmt == "jsonl":
        entries = list(_read_jsonl(src / "metadata.jsonl"))
    elif fmt == "csv":
        entries = list(_read_csv(src / "meta.csv"))
    else:
        import datasets
        _check_dataset_files(src)
        ds = datasets.load_from_disk(str(src)).cast_column("audio", datasets.Audio(decode=False))
        return len(ds), _read_hf(ds)
    return len(entries), iter(entries)


def _check_dataset_files(src: Path) -> None:
    """A datasets folder names its Arrow files in state.json: they must be files inside the export too."""
    try:
        state = json.loads((src / "state.json").read_text(encoding="utf-8"))
        names = [f["filename"] for f in state.get("_data_files", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        raise ValueError("state.json of the datasets folder is unreadable") from None
    for name in names:
        try:
            inside = isinstance(name, str) and (src / name).resolve().is_relative_to(src)
        except (OSError, RuntimeError, ValueError):
            inside = False
        if not inside:
            raise ValueError(f"{printable(str(name))[:200]!r}: {OUTSIDE}")


def _read_jsonl(path: Path) -> Iterator[_Entry]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                yield _Entry(f"metadata.jsonl line {n}", error=f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(record, dict):
                yield _Entry(f"metadata.jsonl line {n}", error="not a JSON object")
                continue
            yield _Entry(_label(record.get("file_name"), f"metadata.jsonl line {n}"), record, record.get("file_name"))


def _read_csv(path: Path) -> Iterator[_Entry]:
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield _Entry(f"meta.csv line {reader.line_num}", error=f"unreadable row ({exc})")
                continue
            name = row.get("filename")
            try:
                record = unflat(row)
            except (TypeError, ValueError) as exc:
                yield _Entry(_label(name, f"meta.csv line {reader.line_num}"), error=f"bad value ({exc})")
                continue
            # the csv layout names files relative to DIR/audio
            yield _Entry(_label(name, f"meta.csv line {reader.line_num}"), record,
                         str(Path("audio") / name) if isinstance(name, str) and name else None)


def _read_hf(ds) -> Iterator[_Entry]:
    for n, row in enumerate(ds):
        label = _label(row.get("file_name"), f"dataset row {n}")
        try:
            record = unflat(row)
        except (TypeError, ValueError) as exc:
            yield _Entry(label, error=f"bad value ({exc})")
            continue
        data = (row.get("audio") or {}).get("bytes")
        # only the bytes stored in the dataset: its `path` could name any file on the server
        yield _Entry(label, record, data) if data else _Entry(label, error="the row holds no audio bytes")


def import_export(ws: Workspace, src: str | Path, *, importer: str | None = None, keep_authors: bool = False,
                  progress: Progress | None = None, cancel: threading.Event | None = None) -> ImportExportReport:
    """Restore an export: each clip becomes a recording (its window) with the same captions and review.

    `importer` (the signed-in user; IMPORT_ACTOR when None) is recorded as the author of every
    restored decision, caption and event, at the time of the import, and versions count this
    catalogue's own saves; the names, times and versions in the file are kept only as provenance
    text. `keep_authors=True` restores them as they were: for admins and the CLI, never for an
    annotator's upload. Idempotent: a clip whose audio is already in the workspace is a duplicate.
    """
    src = Path(src).expanduser().resolve()
    fmt = detect_format(src)
    report = ImportExportReport()
    total, entries = _read_export(src, fmt)
    who = (importer or "").strip() or IMPORT_ACTOR
    for i, entry in enumerate(entries):
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        try:
            if entry.error:
                raise ValueError(entry.error)
            _restore_one(ws, entry, src, who, keep_authors)
            report.imported += 1
        except _Duplicate:
            report.duplicates += 1
        except Exception as exc:  # noqa: BLE001 - an export is user input: one bad record never stops the rest
            report.errors.append(f"{entry.label}: {printable(str(exc)) or type(exc).__name__}")
        if progress:
            progress(i + 1, total, entry.label)
    return report


class _Duplicate(Exception):
    pass


def _audio_bytes(src: Path, entry: _Entry, limit: int) -> bytes:
    """The clip's audio: bytes from the dataset, or a regular file inside the export, read up to `limit`."""
    if isinstance(entry.audio, (bytes, bytearray)):
        data = bytes(entry.audio)
    elif isinstance(entry.audio, str) and entry.audio.strip():
        data = _read_inside(src, entry.audio, limit)
    else:
        raise ValueError("the record names no audio file (file_name)")
    if len(data) > limit:
        raise ValueError(f"{megabytes(len(data))} is over the {megabytes(limit)} limit")
    return data


def _read_inside(src: Path, name: str, limit: int) -> bytes:
    """Read `src/name` only if it resolves (symlinks followed) inside `src` and is a regular file.

    Containment is checked before the file is touched, so the refusal says nothing about whether
    a path outside exists; the read is capped, so no file (or device) can exhaust memory.
    """
    try:
        path = (src / name).resolve()
    except (OSError, RuntimeError, ValueError):         # a symlink loop, a NUL byte
        raise ValueError(OUTSIDE) from None
    if not path.is_relative_to(src):
        raise ValueError(OUTSIDE)
    # O_NONBLOCK: opening a FIFO must not hang; O_NOFOLLOW: nothing swapped in since resolve()
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ValueError(f"cannot read the audio file ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{megabytes(info.st_size)} is over the {megabytes(limit)} limit")
        return fh.read(limit + 1)


def _restore_one(ws: Workspace, entry: _Entry, src: Path, importer: str, keep_authors: bool) -> None:
    record = entry.record or {}
    limit = max_file_bytes(ws)
    data = _audio_bytes(src, entry, limit)
    wave, _ = audio.decode(data, max_bytes=limit)
    history = _history(record)                          # checked before anything is written
    provenance: list[str] = []
    if not keep_authors:
        history, provenance = _as_imported_by(importer, history)
    sha = audio.content_hash(wave)
    path = ws.audio_path(sha)
    if not path.exists():
        audio.write_flac(path, wave)
    meta = dict(record.get("recording_meta") or {}) if isinstance(record.get("recording_meta"), dict) else {}
    meta["exported_clip"] = {"clip_key": record.get("clip_key"), "recording_sha256": record.get("recording_sha256"),
                             "start": record.get("start"), "end": record.get("end"), "from": str(src),
                             "imported_by": importer, "imported": now(),
                             "authors": "as in the export" if keep_authors else "the importer; see provenance"}
    if provenance:
        meta["exported_clip"]["provenance"] = provenance
    duration = round(len(wave) / audio.SAMPLE_RATE, 3)
    rec, created = ws.catalog.add_recording(
        sha256=sha, original_name=safe_name(str(record.get("original_name") or "clip")),
        source=safe_name(str(record.get("source") or "export")), duration=duration, sample_rate=audio.SAMPLE_RATE,
        windows=[(0.0, duration)], meta=meta, file_sha256=hashlib.sha256(data).hexdigest())
    if not created:
        raise _Duplicate()
    clip = ws.catalog.clips(rec.id)[0]
    try:
        ws.catalog.restore_clip_history(clip.id, history["captions"], history["review"], history["events"],
                                        history["annotations"])
    except BaseException:
        delete_clips(ws, [clip.id])         # no recording without its history: a re-run can try again
        raise


# -- what a restored history holds, and who it says did it ----------------------------------------------

def _history(record: dict) -> dict:
    """The record's captions, review, events and annotations, checked (a hand-made export without
    `history` gives its one caption and review)."""
    history = record.get("history") or {}
    if not isinstance(history, dict):
        raise ValueError("history is not an object")
    captions = history.get("captions")
    if captions is None:          # a hand-made export without history: its one caption, as imported
        captions = [{"id": 0, "text": record["caption"], "origin": "import", "teacher": record.get("teacher"),
                     "model": record.get("model"), "prompt": record.get("prompt"),
                     "annotator": record.get("caption_annotator"), "tags": record.get("tags") or {},
                     "confidence": record.get("confidence"), "created": record.get("caption_created")}] \
            if record.get("caption") else []
    review = history.get("review") or {"status": record.get("status") or "pending",
                                       "caption_id": 0 if captions else None, "annotator": record.get("annotator"),
                                       "reason": record.get("reason"), "version": record.get("review_version") or 0,
                                       "updated": record.get("review_updated")}
    events, annotations = history.get("events") or [], history.get("annotations") or []
    for name, items in (("captions", captions), ("events", events), ("annotations", annotations)):
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise ValueError(f"history {name} is not a list of objects")
    if not isinstance(review, dict):
        raise ValueError("history review is not an object")
    for c in captions:
        if not isinstance(c.get("text"), str):
            raise ValueError("a caption has no text")
        if c.get("origin") not in CAPTION_ORIGINS:
            c["origin"] = "import"
    states = [review, *annotations] + [e.get(k) or {} for e in events for k in ("before", "after")]
    if any(s.get("status", "pending") not in REVIEW_STATUSES for s in states) or \
            any(not isinstance(a.get("status"), str) for a in annotations):
        raise ValueError(f"unknown review status (expected one of {', '.join(REVIEW_STATUSES)})")
    if any(not isinstance(e.get("action"), str) for e in events):
        raise ValueError("a review event has no action")
    return {"captions": captions, "review": review, "events": events, "annotations": annotations}


def _originally(what: str, who, when, version=None, reason=None) -> str:
    """Provenance text: what the export claims happened, clearly not an identity."""
    who, when = printable(str(who or "unknown"))[:80], printable(str(when or "?"))[:40]
    text = f"imported; originally {what} by {who} at {when}"
    if version:
        text += f" (version {printable(str(version))[:12]})"
    return text + (f"; reason: {reason}" if reason else "")


def _as_imported_by(importer: str, history: dict) -> tuple[dict, list[str]]:
    """The same history, authored by `importer` now, with the catalogue's own version numbers.

    Events are replayed as the importer's saves (versions 1, 2, …: the clip is new), each keeping
    what it claimed in its reason; the review is the last of them (one "import" save is added when
    the events do not lead to it). Returns the history and the caption provenance lines.
    """
    when = now()
    captions, provenance = [], []
    for c in history["captions"]:
        by = c.get("annotator")
        captions.append(dict(c, annotator=importer if by else None, created=when))
        provenance.append(f"caption {c.get('id')} ({c.get('origin')}): "
                          + _originally("written", by or c.get("teacher") or c.get("origin"), c.get("created")))
    state = {"status": "pending", "caption_id": None, "annotator": None, "reason": None, "version": 0,
             "updated": None}
    events = []

    def save(action: str, after: dict) -> None:
        nonlocal state
        new = {"status": after.get("status", "pending"), "caption_id": after.get("caption_id"),
               "annotator": importer, "reason": after.get("reason"), "version": state["version"] + 1,
               "updated": when}
        events.append({"annotator": importer, "action": action, "before": state, "after": new, "created": when})
        state = new

    for e in history["events"]:
        after = e.get("after") or {}
        save(e["action"], dict(after, reason=_originally(e["action"], e.get("annotator"), e.get("created"),
                                                         after.get("version"), after.get("reason"))))
    review = history["review"]
    claimed = (review.get("status", "pending"), review.get("caption_id"))
    if claimed != (state["status"], state["caption_id"]) and (events or claimed[0] != "pending"):
        save("import", dict(review, reason=_originally(review.get("status", "pending"), review.get("annotator"),
                                                       review.get("updated"), review.get("version"),
                                                       review.get("reason"))))
    annotations = [dict(a, annotator=importer, created=when,
                        reason=_originally(f"overlap {a.get('action') or a.get('status')}", a.get("annotator"),
                                           a.get("created"), reason=a.get("reason")))
                   for a in history["annotations"]]
    return {"captions": captions, "review": state if events else None, "events": events,
            "annotations": annotations}, provenance
