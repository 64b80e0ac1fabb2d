"""What the catalogue says each index record should be: a clip's metadata (caption, status, tags,
recording metadata, its audio key and a fingerprint), and what a collection holds now.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from core.pipeline.index_store import CHUNK
from core.store.catalog import Caption, Clip, Recording
from core.store.workspace import Workspace

TOP_TAGS = 5                       # tags kept per clip in the index (highest score first)


@dataclass
class ClipEntry:
    clip: Clip
    sha256: str                   # recording audio: where to read the samples from
    metadata: dict                # exactly what the index stores (includes audio_key and fp)
    caption: str


def _scalar(value):
    """Chroma metadata values are str/int/float/bool; anything else is stored as JSON text."""
    if isinstance(value, bool) or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def top_tags(tags: dict | list | None, n: int = TOP_TAGS) -> list[str]:
    """The n best tags, lower-cased (filters match them case-insensitively)."""
    if not tags:
        return []
    if isinstance(tags, dict):
        ranked = sorted(tags.items(), key=lambda kv: -(kv[1] if isinstance(kv[1], (int, float)) else 0))
        names = [k for k, _ in ranked]
    else:
        names = list(tags)
    out: list[str] = []
    for name in names:
        name = str(name).strip().lower()
        if name and name not in out:
            out.append(name)
    return out[:n]


def fingerprint(metadata: dict) -> str:
    return hashlib.sha1(json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def clip_metadata(clip: Clip, rec: Recording, caption: Caption | None, status: str) -> dict:
    meta: dict = {
        "clip_id": clip.id, "recording_id": rec.id, "name": rec.original_name,
        "start": float(clip.start), "end": float(clip.end), "duration": round(clip.end - clip.start, 3),
        "status": status, "caption": caption.text if caption else "", "source": rec.source or "",
        "audio_key": f"{rec.sha256}:{clip.start:.3f}-{clip.end:.3f}",
    }
    tags = top_tags(caption.tags if caption else None)
    if tags:                       # Chroma refuses empty lists; `tags` $contains filters the rest
        meta["tags"] = tags
    for key, value in (rec.meta or {}).items():
        value = _scalar(value)
        if value is not None:
            meta[f"meta_{key}"] = value
    meta["fp"] = fingerprint(meta)
    return meta


def catalogue_entries(ws: Workspace) -> dict[int, ClipEntry]:
    """Every clip as the index should hold it, read with a handful of bulk queries."""
    from core.store.catalog import REVIEW_STATUSES
    cat = ws.catalog
    recordings = {r.id: r for r in cat.recordings()}
    captions = cat.published_captions()    # what visitors may read: never a draft or a rejected caption
    status: dict[int, str] = {}
    for name in REVIEW_STATUSES:
        if name != "pending":
            status.update(dict.fromkeys(cat.clip_ids_by_status(name), name))
    out = {}
    for clip in cat.clips():
        rec = recordings.get(clip.recording_id)
        if rec is None:            # deleted between the two reads; the next sync sees it gone
            continue
        cap = captions.get(clip.id)
        out[clip.id] = ClipEntry(clip, rec.sha256, clip_metadata(clip, rec, cap, status.get(clip.id, "pending")),
                                 cap.text if cap else "")
    return out


def _existing(col) -> dict[str, dict]:
    """id → metadata of every record in a collection, read in pages."""
    out: dict[str, dict] = {}
    offset = 0
    while True:
        got = col.get(include=["metadatas"], limit=CHUNK * 5, offset=offset)
        for rid, meta in zip(got["ids"], got["metadatas"]):
            out[rid] = meta or {}
        if len(got["ids"]) < CHUNK * 5:
            return out
        offset += len(got["ids"])
