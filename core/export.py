"""Export captions with their provenance and audio; import such an export into another workspace.

    DIR/audio/<clip>.flac   one file per clip: its window, 16 kHz mono FLAC
    DIR/metadata.jsonl      format "jsonl": one record per clip, `file_name` relative to DIR
                            (the Hugging Face audiofolder layout)
    DIR/meta.csv            format "csv": `filename` relative to DIR/audio plus `caption` (the labelled-folder
                            layout Hearsay's importer and evaluator read); provenance in the other columns
    DIR/                    format "hf": a `datasets` folder (`save_to_disk`) with an Audio column; load it
                            with `datasets.load_from_disk(DIR)`

Each record holds the chosen caption and its provenance (teacher, model, prompt, annotator, timestamps),
the review (status, who, reason, when) and, in `history`, the clip's whole caption history, review events
and overlap annotations, so `import_export` restores the same reviews in a new workspace.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import soundfile as sf

from core import audio
from core.workspace import Workspace

FORMATS = ("jsonl", "csv", "hf")
Progress = Callable[[int, int, str], None]
# Columns of the flat record, in the order CSV and the HF dataset show them.
COLUMNS = ["caption", "status", "annotator", "reason", "review_updated", "review_version",
           "caption_origin", "teacher", "model", "prompt", "caption_annotator", "confidence", "tags",
           "caption_created", "source", "original_name", "recording_sha256", "start", "end", "duration",
           "recording_meta", "clip_key", "history"]
JSON_COLUMNS = ("tags", "recording_meta", "history")


@dataclass
class ExportReport:
    out_dir: Path
    format: str
    count: int = 0
    cancelled: bool = False
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"exported {self.count} clips as {self.format} to {self.out_dir}"
        if self.errors:
            text += f"; {len(self.errors)} failed ({self.errors[0]}{' …' if len(self.errors) > 1 else ''})"
        return text + (" — cancelled, nothing was written" if self.cancelled else "")


@dataclass
class ImportExportReport:
    imported: int = 0
    duplicates: int = 0
    cancelled: bool = False
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"restored {self.imported} clips with their captions and reviews, {self.duplicates} already there"
        if self.errors:
            text += f", {len(self.errors)} failed ({self.errors[0]}{' …' if len(self.errors) > 1 else ''})"
        return text + (" — cancelled, run again to continue" if self.cancelled else "")


# -- export ---------------------------------------------------------------------------------------

def _file_name(clip_id: int, original_name: str, start: float, end: float) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(original_name).stem).strip("._")[:60] or "clip"
    return f"{clip_id:06d}_{stem}_{start:.2f}-{end:.2f}.flac"


def export_clip_ids(ws: Workspace, statuses: Sequence[str] | None = None) -> list[int]:
    """Clips worth exporting: those with a caption or a decision, optionally only some statuses."""
    reviews = ws.catalog.reviews()
    captioned = set(ws.catalog.current_captions())
    return [cid for cid, r in reviews.items()
            if (cid in captioned or r.status != "pending") and (not statuses or r.status in statuses)]


def clip_record(ws: Workspace, clip_id: int) -> dict:
    """Everything about one clip an export keeps (JSON-ready; nested values are dicts and lists)."""
    cat = ws.catalog
    clip = cat.get_clip(clip_id)
    rec = cat.get_recording(clip.recording_id)
    review = cat.get_review(clip_id)
    captions = cat.captions(clip_id)
    chosen = next((c for c in captions if c.id == review.caption_id), captions[-1] if captions else None)
    return {
        "caption": chosen.text if chosen else "",
        "status": review.status, "annotator": review.annotator, "reason": review.reason,
        "review_updated": review.updated, "review_version": review.version,
        "caption_origin": chosen.origin if chosen else None, "teacher": chosen.teacher if chosen else None,
        "model": chosen.model if chosen else None, "prompt": chosen.prompt if chosen else None,
        "caption_annotator": chosen.annotator if chosen else None,
        "confidence": chosen.confidence if chosen else None, "tags": chosen.tags if chosen else {},
        "caption_created": chosen.created if chosen else None,
        "source": rec.source, "original_name": rec.original_name, "recording_sha256": rec.sha256,
        "start": clip.start, "end": clip.end, "duration": round(clip.end - clip.start, 3),
        "recording_meta": rec.meta, "clip_key": ws.clip_key(clip),
        "history": {
            "chosen_caption_id": chosen.id if chosen else None,
            "captions": [c.__dict__ for c in captions],
            "review": review.__dict__,
            "events": [{k: v for k, v in e.__dict__.items() if k not in ("id", "clip_id")}
                       for e in cat.review_events(clip_id)],
            "annotations": [{k: v for k, v in a.__dict__.items() if k not in ("id", "clip_id")}
                            for a in cat.annotations(clip_id)],
        },
    }


def _flat(record: dict) -> dict:
    """CSV/Arrow cells: nested values as JSON text."""
    return {k: (json.dumps(record[k], ensure_ascii=False) if k in JSON_COLUMNS else record[k]) for k in COLUMNS}


def _flac_bytes(wave) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.pcm16(wave), audio.SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def export(ws: Workspace, out_dir: str | Path, fmt: str = "jsonl", *, statuses: Sequence[str] | None = None,
           progress: Progress | None = None, cancel: threading.Event | None = None) -> ExportReport:
    """Write the export into `out_dir`, which must be new or empty (nothing is ever overwritten).

    Built in a temporary sibling folder and renamed into place at the end, so a crash or a
    cancel leaves no half export behind.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    report = ExportReport(out_dir, fmt)
    ids = export_clip_ids(ws, statuses)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if fmt == "hf":
            _export_hf(ws, ids, work, report, progress, cancel)
        else:
            _export_files(ws, ids, work, fmt, report, progress, cancel)
        if report.cancelled:
            return report
        if out_dir.exists():
            out_dir.rmdir()          # empty (checked above)
        work.replace(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _records(ws: Workspace, ids: Sequence[int], report: ExportReport, progress: Progress | None,
             cancel: threading.Event | None) -> Iterator[tuple[dict, str, bytes]]:
    """(record, file name, FLAC bytes) per clip; a clip whose audio cannot be read is reported and skipped."""
    for i, cid in enumerate(ids):
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            return
        try:
            record = clip_record(ws, cid)
            name = _file_name(cid, record["original_name"], record["start"], record["end"])
            data = _flac_bytes(ws.load_clip(cid))
        except (OSError, KeyError, audio.AudioError, RuntimeError) as exc:
            report.errors.append(f"clip {cid}: {exc}")
            continue
        report.count += 1
        if progress:
            progress(i + 1, len(ids), name)
        yield record, name, data


def _export_files(ws, ids, work: Path, fmt: str, report, progress, cancel) -> None:
    (work / "audio").mkdir()
    rows = []
    for record, name, data in _records(ws, ids, report, progress, cancel):
        (work / "audio" / name).write_bytes(data)
        rows.append((record, name))
    if fmt == "jsonl":
        with open(work / "metadata.jsonl", "w", encoding="utf-8") as fh:
            for record, name in rows:
                fh.write(json.dumps({"file_name": f"audio/{name}", **record}, ensure_ascii=False) + "\n")
    else:
        with open(work / "meta.csv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["filename", *COLUMNS])
            writer.writeheader()
            for record, name in rows:
                writer.writerow({"filename": name, **_flat(record)})


def _export_hf(ws, ids, work: Path, report, progress, cancel) -> None:
    """A `datasets` folder: rows are generated into a scratch cache, then `save_to_disk` writes them."""
    import datasets

    features = datasets.Features({
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "file_name": datasets.Value("string"),
        **{c: datasets.Value("string") for c in COLUMNS},
        "review_version": datasets.Value("int64"), "confidence": datasets.Value("float64"),
        "start": datasets.Value("float64"), "end": datasets.Value("float64"), "duration": datasets.Value("float64"),
    })

    def rows():
        for record, name, data in _records(ws, ids, report, progress, cancel):
            yield {"audio": {"bytes": data, "path": name}, "file_name": name, **_flat(record)}

    scratch = work / ".cache"
    try:
        ds = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(scratch),
                                             fingerprint=uuid.uuid4().hex)
        if report.cancelled:
            return
        # Arrow struct → Audio is a schema cast: it needs no decoder (torchcodec) to write or load.
        ds = ds.cast_column("audio", datasets.Audio(sampling_rate=audio.SAMPLE_RATE))
        ds.save_to_disk(str(work / "dataset"))
        del ds
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for item in (work / "dataset").iterdir():
        item.replace(work / item.name)
    (work / "dataset").rmdir()


# -- import -------------------------------------------------------------------------------------------

def extract_zip(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a zipped export (as the Review tab uploads it); entries that would escape `dest` are refused."""
    import zipfile
    dest = Path(dest).resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest):
                raise ValueError(f"refused: {info.filename!r} would land outside the folder (zip-slip)")
        zf.extractall(dest)
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


def _read_export(src: Path, fmt: str) -> Iterator[tuple[dict, str | Path | bytes]]:
    """(record with nested values, audio path or bytes) per exported clip."""
    if fmt == "jsonl":
        with open(src / "metadata.jsonl", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    record = json.loads(line)
                    yield record, src / record["file_name"]
    elif fmt == "csv":
        with open(src / "meta.csv", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                yield _unflat(row), src / "audio" / row["filename"]
    else:
        import datasets
        ds = datasets.load_from_disk(str(src)).cast_column("audio", datasets.Audio(decode=False))
        for row in ds:
            yield _unflat(row), row["audio"]["bytes"]


def _unflat(row: dict) -> dict:
    """Undo `_flat`: JSON text back to values; CSV's numbers come back as text too."""
    out = dict(row)
    for k in JSON_COLUMNS:
        if isinstance(out.get(k), str):
            out[k] = json.loads(out[k]) if out[k] else {}
    for k, kind in (("confidence", float), ("start", float), ("end", float), ("duration", float),
                    ("review_version", int)):
        if isinstance(out.get(k), str):
            out[k] = kind(out[k]) if out[k] else None
    return out


def import_export(ws: Workspace, src: str | Path, *, progress: Progress | None = None,
                  cancel: threading.Event | None = None) -> ImportExportReport:
    """Restore an export: each clip becomes a recording (its window) with the same captions and review.

    Idempotent: a clip whose audio is already in the workspace is counted as a duplicate and left alone.
    """
    src = Path(src).expanduser().resolve()
    fmt = detect_format(src)
    report = ImportExportReport()
    items = list(_read_export(src, fmt))
    for i, (record, source) in enumerate(items):
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        label = record.get("file_name") or record.get("filename") or record.get("original_name", "?")
        try:
            _restore_one(ws, record, source, src)
            report.imported += 1
        except _Duplicate:
            report.duplicates += 1
        except (OSError, KeyError, ValueError) as exc:      # AudioError is a ValueError
            report.errors.append(f"{label}: {exc}")
        if progress:
            progress(i + 1, len(items), str(label))
    return report


class _Duplicate(Exception):
    pass


def _restore_one(ws: Workspace, record: dict, source: Path | bytes, src: Path) -> None:
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    wave, _ = audio.decode(bytes(data))
    sha = audio.content_hash(wave)
    path = ws.audio_path(sha)
    if not path.exists():
        audio.write_flac(path, wave)
    meta = dict(record.get("recording_meta") or {})
    meta["exported_clip"] = {"clip_key": record.get("clip_key"), "recording_sha256": record.get("recording_sha256"),
                             "start": record.get("start"), "end": record.get("end"), "from": str(src)}
    duration = round(len(wave) / audio.SAMPLE_RATE, 3)
    rec, created = ws.catalog.add_recording(
        sha256=sha, original_name=record.get("original_name") or "clip", source=record.get("source") or "export",
        duration=duration, sample_rate=audio.SAMPLE_RATE, windows=[(0.0, duration)], meta=meta,
        file_sha256=hashlib.sha256(data).hexdigest())
    if not created:
        raise _Duplicate()
    clip = ws.catalog.clips(rec.id)[0]
    history = record.get("history") or {}
    captions = history.get("captions")
    if captions is None:          # a hand-made export without history: its one caption, as imported
        captions = [{"id": 0, "text": record["caption"], "origin": "import", "teacher": record.get("teacher"),
                     "model": record.get("model"), "prompt": record.get("prompt"),
                     "annotator": record.get("caption_annotator"), "tags": record.get("tags") or {},
                     "confidence": record.get("confidence")}] if record.get("caption") else []
    review = history.get("review") or {"status": record.get("status") or "pending",
                                       "caption_id": 0 if captions else None, "annotator": record.get("annotator"),
                                       "reason": record.get("reason"), "version": record.get("review_version") or 0,
                                       "updated": record.get("review_updated")}
    ws.catalog.restore_clip_history(clip.id, captions, review, history.get("events") or [],
                                    history.get("annotations") or [])
