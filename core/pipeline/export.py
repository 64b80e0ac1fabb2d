"""Export captions with their provenance and audio (reading one back: core.pipeline.export_restore).

    DIR/audio/<clip>.flac   one file per clip: its window, 16 kHz mono FLAC
    DIR/metadata.jsonl      format "jsonl": one record per clip, `file_name` relative to DIR
                            (the Hugging Face audiofolder layout)
    DIR/meta.csv            format "csv": `filename` relative to DIR/audio plus `caption` (the labelled-folder
                            layout Hearsay's importer and evaluator read); provenance in the other columns
    DIR/                    format "hf": a `datasets` folder (`save_to_disk`) with an Audio column; load it
                            with `datasets.load_from_disk(DIR)`

Each record holds the chosen caption and its provenance (teacher, model, prompt, annotator, timestamps),
the review (status, who, reason, when) and, in `history`, the clip's whole caption history, review events
and overlap annotations, so `import_export` (export_restore, re-exported here) restores the same reviews
in a new workspace.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import soundfile as sf

from core.pipeline.export_format import COLUMNS, Outcome, flat
from core.pipeline.export_restore import (CAPTION_ORIGINS, IMPORT_ACTOR, OUTSIDE,  # noqa: F401  (re-exported)
                                         ImportExportReport, detect_format, extract_zip, import_export)
from core.store import audio
from core.store.workspace import Workspace

FORMATS = ("jsonl", "csv", "hf")
Progress = Callable[[int, int, str], None]


@dataclass
class ExportReport(Outcome):
    out_dir: Path
    format: str
    count: int = 0

    def summary(self) -> str:
        return self._summary(f"exported {self.count} clips as {self.format} to {self.out_dir}", "; ",
                             "cancelled, nothing was written")


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
                writer.writerow({"filename": name, **flat(record)})


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
            yield {"audio": {"bytes": data, "path": name}, "file_name": name, **flat(record)}

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
