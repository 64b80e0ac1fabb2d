"""The Chroma index: one collection of clip vectors per model version, kept in step with the catalogue.

    hs-<workspace>-<model slug>-<hash>   one record per clip: the model's audio embedding + metadata
    hs-<workspace>-captions-minilm       one record per captioned clip: MiniLM of its published caption
                                         (model-independent; the text half of hybrid search)

Collections are created with `embedding_function=None` and always given vectors: Chroma's default
embedding function would download a model. The collection's metadata records the model id, its
dimension and a checksum of its weights; a collection whose model changed under the same id is
rebuilt rather than mixed. Syncing is incremental: a clip is embedded only when its audio (recording
hash + window) is new; caption, review-status or metadata changes only rewrite metadata; clips gone
from the catalogue lose their vectors. Each record carries `audio_key` and a fingerprint `fp` of its
metadata so a sync can tell which case applies without touching the audio.

The store is an embedded `PersistentClient` in `workspace/chroma/` by default, or a `chroma run`
server (`HttpClient`) when `settings.chroma_mode == "http"`, so several processes share one store.
Collection names carry a per-workspace id so two workspaces can share one server safely.

A rebuild (`sync(rebuild=True)`) fills a second collection (`<name>-next`) while the old one keeps
answering searches, then swaps it in by deleting the old one and renaming the new one: an
interrupted or killed rebuild leaves the old index serving. Store errors met by a search (say,
another process rebuilding at that moment) become `IndexBusy`, whose message is for people.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from core.store import audio
from core.store.catalog import Caption, Clip, Recording
from core.models import registry
from core.models.embedder import Embedder
from core.models.registry import ModelUnavailable
from core.store.settings import Settings
from core.store.workspace import Workspace

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

TOP_TAGS = 5                       # tags kept per clip in the index (highest score first)
CAPTIONS_MODEL = "captions-minilm"
CHUNK = 2000                       # records per Chroma call when reading, updating or deleting
HNSW = {"hnsw": {"space": "cosine"}}
_PROBE_TEXT = "a dog barks twice, then a car passes in the rain"


REBUILD_SUFFIX = "-next"           # the collection a rebuild fills before it is swapped in
CATCH_UP_EVERY = 2.0               # seconds between the syncs searches start while the catalogue keeps changing
BUSY = "The index is being rebuilt or updated by another process; try again in a moment."


class IndexUnavailable(RuntimeError):
    """An index problem the user can act on (no model yet, server unreachable)."""


class IndexBusy(IndexUnavailable):
    """The store refused a read or write mid-way (e.g. a rebuild in another process): retry later."""


class ModelNotAvailable(IndexUnavailable, ModelUnavailable):
    """The model to index or search with cannot be had (core.models.registry.ModelUnavailable, its message
    unchanged): callers handling either an index problem or a missing model see it."""


def store_errors(fn: Callable) -> Callable:
    """Turn Chroma's own errors into IndexBusy (with its plain message); the raw error is logged."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            from chromadb.errors import ChromaError
            if not isinstance(exc, ChromaError):
                raise
            log.warning("store error in %s: %s: %s", fn.__name__, type(exc).__name__, exc)
            raise IndexBusy(BUSY) from exc
    return wrapper


# -- clients and collections ------------------------------------------------------------------------
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()
_sync_locks: dict[str, threading.Lock] = {}
_workspace_ids: dict[str, str] = {}


def get_client(ws: Workspace):
    """The Chroma client for this workspace's settings (one per store per process)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    s: Settings = ws.settings
    if s.chroma_mode == "http":
        key = ("http", s.chroma_host, int(s.chroma_port))
    elif s.chroma_mode == "embedded":
        key = ("embedded", str(ws.chroma_dir))
    else:
        raise ValueError(f"chroma_mode must be 'embedded' or 'http', not {s.chroma_mode!r}")
    with _clients_lock:
        if key not in _clients:
            chroma_settings = ChromaSettings(anonymized_telemetry=False)   # slow to build (pydantic): once
            if key[0] == "http":
                try:
                    _clients[key] = chromadb.HttpClient(host=s.chroma_host, port=int(s.chroma_port),
                                                        settings=chroma_settings)
                except Exception as exc:  # noqa: BLE001 - say what to do, not just what broke
                    raise IndexUnavailable(f"cannot reach the Chroma server at {s.chroma_host}:{s.chroma_port} "
                                           f"({exc}); start one with `chroma run --path DIR --port "
                                           f"{s.chroma_port}` or set chroma_mode=embedded") from exc
            else:
                _clients[key] = chromadb.PersistentClient(path=key[1], settings=chroma_settings)
        return _clients[key]


def workspace_id(ws: Workspace) -> str:
    """A short random id kept in the catalogue: namespaces this workspace's collections on a shared server."""
    key = str(ws.catalog.path)
    if key not in _workspace_ids:
        value = ws.catalog.get_value("workspace_id")
        if value is None:
            ws.catalog.set_value("workspace_id", uuid.uuid4().hex[:8])
            value = ws.catalog.get_value("workspace_id")
        _workspace_ids[key] = value
    return _workspace_ids[key]


def collection_name(ws: Workspace, model_id: str) -> str:
    """Chroma names allow [A-Za-z0-9._-], 3–512 chars, alphanumeric at both ends."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-._")[:60].strip("-._") or "model"
    digest = hashlib.sha1(model_id.encode()).hexdigest()[:8]
    return f"hs-{workspace_id(ws)}-{slug}-{digest}"


def model_checksum(embedder: Embedder) -> str:
    """The embedder's own weight checksum (`checksum` or `digest()`), else a fingerprint of its outputs.

    The fallback embeds a fixed sentence and a fixed chirp; rounding keeps float noise from
    looking like a new model.
    """
    for attr in ("checksum", "digest"):
        own = getattr(embedder, attr, None)
        own = own() if callable(own) else own
        if own:
            return f"{attr}:{own}"[:80]
    t = np.arange(16_000, dtype=np.float32) / 16_000
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t)).astype(np.float32)
    probe = np.concatenate([np.asarray(embedder.embed_text([_PROBE_TEXT]), np.float32).ravel(),
                            np.asarray(embedder.embed_audio([chirp]), np.float32).ravel()])
    return "probe:" + hashlib.sha1(np.round(probe, 3).tobytes()).hexdigest()[:16]


def checksum_of(embedder: Embedder) -> str:
    """model_checksum, remembered on the object (the probe costs a forward pass)."""
    cached = getattr(embedder, "_hearsay_checksum", None)
    if cached is None:
        cached = model_checksum(embedder)
        try:
            embedder._hearsay_checksum = cached
        except AttributeError:        # slots / frozen objects: recompute next time
            pass
    return cached


def _lock_for(name: str) -> threading.Lock:
    with _clients_lock:
        return _sync_locks.setdefault(name, threading.Lock())


def _collection(ws: Workspace, model_id: str, dim: int, checksum: str, kind: str):
    """Get or create a collection; returns (collection, reason it must be rebuilt or None)."""
    from chromadb.errors import NotFoundError
    client = get_client(ws)
    name = collection_name(ws, model_id)
    try:           # the common case, and 30× cheaper than get_or_create with a configuration
        col = client.get_collection(name, embedding_function=None)
    except NotFoundError:
        meta = {"hearsay": kind, "model_id": model_id, "dim": int(dim), "checksum": checksum}
        col = client.get_or_create_collection(name, embedding_function=None, metadata=meta, configuration=HNSW)
    found = col.metadata or {}
    if int(found.get("dim", dim)) != int(dim):
        return col, f"dimension changed ({found.get('dim')} → {dim})"
    if found.get("checksum", checksum) != checksum:
        return col, "the model's weights changed under the same id"
    return col, None


def _recreate(ws: Workspace, model_id: str, dim: int, checksum: str, kind: str):
    client = get_client(ws)
    name = collection_name(ws, model_id)
    try:
        client.delete_collection(name)
    except Exception:  # noqa: BLE001 - absent already
        pass
    col, _ = _collection(ws, model_id, dim, checksum, kind)
    return col


def open_collection(ws: Workspace, embedder: Embedder):
    """The model's clip collection (created empty if new). Does not sync."""
    col, _ = _collection(ws, embedder.model_id, embedder.dim, checksum_of(embedder), "clips")
    return col


def captions_collection(ws: Workspace):
    col, _ = _collection(ws, CAPTIONS_MODEL, 384, "minilm-l6-v2", "captions")
    return col


def existing_collection(ws: Workspace, embedder: Embedder):
    """The model's clip collection, or None when it has none yet (never creates one)."""
    from chromadb.errors import NotFoundError
    try:
        return get_client(ws).get_collection(collection_name(ws, embedder.model_id), embedding_function=None)
    except NotFoundError:
        return None


def has_collection(ws: Workspace, embedder: Embedder) -> bool:
    return existing_collection(ws, embedder) is not None


def _fresh_collection(ws: Workspace, model_id: str, dim: int, checksum: str):
    """An empty collection beside the live one, for a rebuild (a leftover of an earlier one is dropped)."""
    name = collection_name(ws, model_id) + REBUILD_SUFFIX
    _drop(ws, name)
    meta = {"hearsay": "rebuilding", "model_id": model_id, "dim": int(dim), "checksum": checksum}
    return get_client(ws).create_collection(name, embedding_function=None, metadata=meta, configuration=HNSW)


def _drop(ws: Workspace, name: str) -> None:
    from chromadb.errors import NotFoundError
    try:
        get_client(ws).delete_collection(name)
    except NotFoundError:
        pass


def _swap_in(ws: Workspace, built, name: str, kind: str) -> None:
    """Replace collection `name` with the finished `built` one: delete, then rename (two quick store
    calls; searches before them read the old vectors, after them the new ones)."""
    from chromadb.errors import ChromaError
    meta = {**(built.metadata or {}), "hearsay": kind}
    for attempt in range(3):
        _drop(ws, name)
        try:
            built.modify(name=name, metadata=meta)
            return
        except ChromaError:        # another process re-created `name` in between: drop that and retry
            if attempt == 2:
                raise


def _set_marker(col, marker: str | None) -> None:
    meta = dict(col.metadata or {})
    if marker is None:
        meta.pop("catalog_marker", None)
    else:
        meta["catalog_marker"] = marker
    col.modify(metadata=meta)


def list_indexes(ws: Workspace) -> list[dict]:
    """This workspace's clip collections: model id, name, count, dim."""
    prefix = f"hs-{workspace_id(ws)}-"
    out = []
    client = get_client(ws)
    for col in client.list_collections():
        if not col.name.startswith(prefix):
            continue
        meta = col.metadata or {}
        if meta.get("hearsay") == "clips":
            out.append({"model_id": meta.get("model_id"), "collection": col.name, "count": col.count(),
                        "dim": meta.get("dim"), "current": "catalog_marker" in meta})
    return out


# -- what the catalogue says each record should be ----------------------------------------------------
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


# -- syncing -------------------------------------------------------------------------------------------
@dataclass
class IndexReport:
    model_id: str
    collection: str
    clips: int = 0                 # in the catalogue
    embedded: int = 0              # audio embedded this run
    updated: int = 0               # metadata rewritten without re-embedding
    deleted: int = 0               # vectors of clips gone from the catalogue
    unchanged: int = 0
    pending: int = 0               # left for a later run (max_new or cancel)
    captions_embedded: int = 0
    captions_deleted: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    cancelled: bool = False
    deferred: bool = False         # catch_up left the sync for later (another one running, or one just done)
    rebuilt: str | None = None     # why the collection was recreated, if it was
    seconds: float = 0.0

    def summary(self) -> str:
        text = (f"{self.model_id}: {self.embedded} embedded, {self.updated} updated, {self.deleted} deleted, "
                f"{self.unchanged} unchanged of {self.clips} clips; captions {self.captions_embedded} embedded"
                f" in {self.seconds:.1f} s")
        if self.rebuilt:
            text += f" — rebuilt: {self.rebuilt}"
        if self.failed:
            text += f" — {len(self.failed)} failed (first: clip {self.failed[0][0]}: {self.failed[0][1]})"
        if self.pending:
            text += f" — {self.pending} clips still to embed"
        if self.cancelled:
            text += " — cancelled, run again to continue"
        return text


def _chunks(seq: Sequence, n: int = CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _load_batch(ws: Workspace, entries: list[ClipEntry]) -> tuple[list[ClipEntry], list[np.ndarray], list]:
    ok, waves, failed = [], [], []
    for e in entries:
        try:
            waves.append(audio.read(ws.audio_path(e.sha256), e.clip.start, e.clip.end))
            ok.append(e)
        except Exception as exc:  # noqa: BLE001 - one unreadable clip never stops the index
            failed.append((e.clip.id, f"{type(exc).__name__}: {exc}"))
    return ok, waves, failed


def _embed(embedder: Embedder, entries: list[ClipEntry], waves: list[np.ndarray]):
    """Embed a batch; when the batch fails, embed one by one so only the bad clip is lost."""
    try:
        vectors = np.asarray(embedder.embed_audio(waves), dtype=np.float32)
        return entries, vectors, []
    except Exception:  # noqa: BLE001
        keep, rows, failed = [], [], []
        for e, w in zip(entries, waves):
            try:
                rows.append(np.asarray(embedder.embed_audio([w]), dtype=np.float32)[0])
                keep.append(e)
            except Exception as exc:  # noqa: BLE001
                failed.append((e.clip.id, f"{type(exc).__name__}: {exc}"))
        return keep, (np.stack(rows) if rows else np.zeros((0, embedder.dim), np.float32)), failed


def _cleared(old: dict, new: dict) -> dict:
    """Chroma merges metadata on update: keys no longer present must be set to None to go away."""
    return {**{k: None for k in old if k not in new}, **new}


def sync(ws: Workspace, embedder: Embedder, *, rebuild: bool = False, clip_ids: Sequence[int] | None = None,
         max_new: int | None = None, batch_size: int = 64, captions: bool = True,
         progress: Progress | None = None, cancel: threading.Event | None = None) -> IndexReport:
    """Bring the model's collection (and the caption collection) in line with the catalogue.

    `clip_ids` limits embedding to those clips (nothing is deleted). `max_new` keeps a quick sync
    quick: when more clips than that need embedding, none are embedded this run (they stay pending
    and the report says how many) while metadata updates and deletions still apply. Safe to cancel
    and run again. `rebuild` fills a new collection beside the old one and swaps it in only once it
    is complete; cancelled or failed, it is dropped and the old one keeps serving.
    """
    started = time.perf_counter()
    checksum = checksum_of(embedder)
    name = collection_name(ws, embedder.model_id)
    report = IndexReport(embedder.model_id, name)
    with _lock_for(name):
        marker = ws.catalog.change_marker()       # read first: a change during the sync leaves it stale
        col, reason = _collection(ws, embedder.model_id, embedder.dim, checksum, "clips")
        aside = rebuild and not reason     # asked for: build beside the old index, which keeps serving
        if rebuild or reason:
            report.rebuilt = reason or "requested"
            log.info("rebuilding %s: %s", name, report.rebuilt)
            if aside:
                col = _fresh_collection(ws, embedder.model_id, embedder.dim, checksum)
            else:                          # old vectors are unusable for these weights: start over in place
                col = _recreate(ws, embedder.model_id, embedder.dim, checksum, "clips")
        swapped = False
        try:
            complete = _fill(ws, embedder, col, report, clip_ids=clip_ids, max_new=max_new, batch_size=batch_size,
                             captions=captions, rebuild=rebuild, progress=progress, cancel=cancel)
            _set_marker(col, marker if complete else None)
            if aside and complete:
                _swap_in(ws, col, name, "clips")
                swapped = True
        finally:
            if aside and not swapped:  # an unfinished rebuild (cancelled, failed): the old index was never touched
                _drop(ws, col.name)
    report.seconds = time.perf_counter() - started
    return report


def _fill(ws: Workspace, embedder: Embedder, col, report: IndexReport, *, clip_ids, max_new, batch_size,
          captions, rebuild, progress, cancel) -> bool:
    """sync's work on one collection; True when it now mirrors the whole catalogue."""
    entries = catalogue_entries(ws)
    report.clips = len(entries)
    existing = _existing(col)

    if clip_ids is None:
        gone = [rid for rid in existing if not rid.isdigit() or int(rid) not in entries]
        for part in _chunks(gone):
            col.delete(ids=list(part))
        report.deleted = len(gone)
    scope = entries if clip_ids is None else {c: entries[c] for c in clip_ids if c in entries}

    to_embed, to_update = [], []
    for cid, entry in scope.items():
        old = existing.get(str(cid))
        if old is None or old.get("audio_key") != entry.metadata["audio_key"]:
            to_embed.append(entry)
        elif old.get("fp") != entry.metadata["fp"]:
            to_update.append((entry, old))
        else:
            report.unchanged += 1
    stale_audio = [str(e.clip.id) for e in to_embed if str(e.clip.id) in existing]
    if stale_audio:            # same id, different audio: drop so no old metadata key survives the upsert
        col.delete(ids=stale_audio)
    for part in _chunks(to_update):
        col.update(ids=[str(e.clip.id) for e, _ in part],
                   metadatas=[_cleared(old, e.metadata) for e, old in part])
    report.updated = len(to_update)

    to_embed.sort(key=lambda e: (e.sha256, e.clip.start))     # read each recording's file in order
    if max_new is not None and len(to_embed) > max_new:
        report.pending = len(to_embed)
        to_embed = []
    total = len(to_embed)
    if progress:
        progress(0, total, f"embedding {total} clips with {embedder.model_id}")
    batches = [to_embed[i:i + batch_size] for i in range(0, total, batch_size)]
    done = 0
    with ThreadPoolExecutor(1, thread_name_prefix="index-load") as pool:   # decode the next batch meanwhile
        future = pool.submit(_load_batch, ws, batches[0]) if batches else None
        for number, _ in enumerate(batches):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                report.pending += total - done
                break
            ok, waves, failed = future.result()
            if number + 1 < len(batches):
                future = pool.submit(_load_batch, ws, batches[number + 1])
            report.failed += failed
            if ok:
                ok, vectors, failed = _embed(embedder, ok, waves)
                report.failed += failed
                if ok:
                    col.upsert(ids=[str(e.clip.id) for e in ok], embeddings=vectors,
                               metadatas=[e.metadata for e in ok])
                    report.embedded += len(ok)
            done += len(batches[number])
            if progress:
                progress(done, total, f"{done}/{total} clips embedded")

    if captions and not report.cancelled:
        _sync_captions(ws, entries, report, restrict=None if clip_ids is None else set(scope), rebuild=rebuild)
    return clip_ids is None and not report.cancelled and report.pending == 0


def _sync_captions(ws: Workspace, entries: dict[int, ClipEntry], report: IndexReport,
                   restrict: set[int] | None, rebuild: bool = False) -> None:
    """MiniLM vectors of published captions, for hybrid search; only changed captions are encoded.
    A rebuild encodes them all into a new collection that then replaces the old one."""
    live = captions_collection(ws)
    with _lock_for(live.name):
        if not rebuild:
            _fill_captions(live, entries, report, restrict)
            return
        col = _fresh_collection(ws, CAPTIONS_MODEL, 384, "minilm-l6-v2")
        try:
            _fill_captions(col, entries, report, restrict)
            _swap_in(ws, col, live.name, "captions")
        except BaseException:
            _drop(ws, col.name)
            raise


def _fill_captions(col, entries: dict[int, ClipEntry], report: IndexReport,
                   restrict: set[int] | None) -> None:
    from core.models import text_encoder
    existing = _existing(col)
    wanted = {cid: e.caption for cid, e in entries.items() if e.caption.strip()}
    if restrict is None:
        gone = [rid for rid in existing if not rid.isdigit() or int(rid) not in wanted]
        for part in _chunks(gone):
            col.delete(ids=list(part))
        report.captions_deleted = len(gone)
    todo = []
    for cid, text in wanted.items():
        if restrict is not None and cid not in restrict:
            continue
        fp = hashlib.sha1(text.encode()).hexdigest()[:16]
        if existing.get(str(cid), {}).get("fp") != fp:
            todo.append((cid, text, fp))
    for part in _chunks(todo, 512):
        vectors = text_encoder.encode([t for _, t, _ in part], bulk=True)    # never in the queries' way
        col.upsert(ids=[str(c) for c, _, _ in part], embeddings=vectors,
                   metadatas=[{"clip_id": c, "fp": fp} for c, _, fp in part])
    report.captions_embedded = len(todo)


def rebuild(ws: Workspace, embedder: Embedder, **kwargs) -> IndexReport:
    """Recreate the model's collection from the catalogue."""
    return sync(ws, embedder, rebuild=True, **kwargs)


def is_current(ws: Workspace, embedder: Embedder) -> bool:
    """True when the collection mirrors the catalogue as it is now (a cheap check)."""
    col, reason = _collection(ws, embedder.model_id, embedder.dim, checksum_of(embedder), "clips")
    return reason is None and (col.metadata or {}).get("catalog_marker") == ws.catalog.change_marker()


@store_errors
def ensure_current(ws: Workspace, embedder: Embedder, *, max_new: int | None = None,
                   progress: Progress | None = None, cancel: threading.Event | None = None) -> IndexReport | None:
    """Sync only when the catalogue moved since the last complete sync; None when nothing to do."""
    if is_current(ws, embedder):
        return None
    return sync(ws, embedder, max_new=max_new, progress=progress, cancel=cancel)


_caught_up: dict[str, float] = {}          # collection → when a search last started a sync of it
_catch_up_lock = threading.Lock()
_last_pending: dict[str, int] = {}        # collection → clips a background catch-up left for "Update index"


@store_errors
def catch_up(ws: Workspace, embedder: Embedder, *, max_new: int | None = None, every: float = CATCH_UP_EVERY,
             progress: Progress | None = None, wait: bool = True) -> IndexReport | None:
    """ensure_current for a search that someone is waiting on.

    While the catalogue keeps changing (a caption job writes every few clips) a sync costs a read of
    every record, and searches would queue behind each other's syncs. So a search syncs only when no
    sync of that collection is running and none started in the last `every` seconds; otherwise it
    answers from the index as it is (a report with `deferred` says so). An empty collection (a new
    workspace's first search) is always synced first.

    `wait=False` (the app's searches): the sync runs in a background thread at low CPU priority and
    this search answers from the index as it is, at once (deferred; `pending` is what the last
    background sync left for "Update index"). Only an empty collection is still filled first.
    """
    if is_current(ws, embedder):
        return None
    name = collection_name(ws, embedder.model_id)
    lock = _lock_for(name)
    empty = open_collection(ws, embedder).count() == 0
    with _catch_up_lock:
        now = time.monotonic()
        if not empty and (lock.locked() or now - _caught_up.get(name, -math.inf) < every):
            return IndexReport(embedder.model_id, name, deferred=True, pending=_last_pending.get(name, 0))
        _caught_up[name] = now
    if wait or empty:
        return sync(ws, embedder, max_new=max_new, progress=progress)
    threading.Thread(target=_background_sync, args=(ws, embedder, name, max_new), name="index-catch-up",
                     daemon=True).start()
    return IndexReport(embedder.model_id, name, deferred=True, pending=_last_pending.get(name, 0))


def _background_sync(ws: Workspace, embedder: Embedder, name: str, max_new: int | None) -> None:
    from core.pipeline.niceness import lower_this_thread
    lower_this_thread()              # its own thread: the searches come first
    try:
        _last_pending[name] = sync(ws, embedder, max_new=max_new).pending
    except Exception:  # noqa: BLE001 - the next search tries again; the searches answer meanwhile
        log.exception("background catch-up of %s failed", name)


def delete_vectors(ws: Workspace, clip_ids: Sequence[int]) -> None:
    """Remove clips from every collection of this workspace now (syncing would also do it later)."""
    ids = [str(int(c)) for c in clip_ids]
    prefix = f"hs-{workspace_id(ws)}-"
    client = get_client(ws)
    for col in client.list_collections():
        if col.name.startswith(prefix):
            for part in _chunks(ids):
                col.delete(ids=list(part))


@store_errors
def status(ws: Workspace, embedder: Embedder) -> dict:
    """How far the model's collection is from the catalogue, for the UI's status line (creates nothing)."""
    col = existing_collection(ws, embedder)
    return {"model_id": embedder.model_id, "collection": collection_name(ws, embedder.model_id),
            "indexed": col.count() if col is not None else 0, "clips": ws.catalog.stats().clips,
            "current": col is not None and is_current(ws, embedder)}


# -- models and vectors ----------------------------------------------------------------------------------
def resolve_embedder(ws: Workspace, model: Embedder | str | None = "active", *,
                     allow_folders: bool = True) -> Embedder:
    """An Embedder from an object or a model name ('active', 'shipped', a registered id, a folder).

    Names are resolved by core.models.registry (which caches loaded models) on the workspace's device; a
    missing model is a ModelNotAvailable whose message says what to do. `allow_folders=False` (anyone but
    an admin) refuses folder paths, and its messages never say what is on the server's disk.
    """
    if model is not None and not isinstance(model, str):
        return model
    try:
        return registry.get_embedder(model or "active", ws, ws.settings.resolved_device(),
                                     allow_folders=allow_folders)
    except ModelUnavailable as exc:
        raise ModelNotAvailable(*exc.args) from exc


def get_embeddings(ws: Workspace, embedder_or_model_id: Embedder | str,
                   clip_ids: Sequence[int] | None = None) -> tuple[list[int], np.ndarray]:
    """(clip ids, [N, dim] vectors) read back from the model's collection; missing clips are indexed first.

    `clip_ids=None` means every clip in the catalogue. Ids not in the catalogue are left out.
    """
    embedder = resolve_embedder(ws, embedder_or_model_id)
    if clip_ids is None:
        ensure_current(ws, embedder)
        col = open_collection(ws, embedder)
        wanted = ws.catalog.clip_ids()
    else:
        wanted = [int(c) for c in clip_ids]
        col = open_collection(ws, embedder)
        present = set()
        for part in _chunks([str(c) for c in wanted]):
            present.update(col.get(ids=list(part), include=[])["ids"])
        missing = [c for c in wanted if str(c) not in present]
        if missing:
            sync(ws, embedder, clip_ids=missing)
    vectors: dict[int, np.ndarray] = {}
    for part in _chunks([str(c) for c in wanted]):
        got = col.get(ids=list(part), include=["embeddings"])
        for rid, vec in zip(got["ids"], got["embeddings"]):
            vectors[int(rid)] = np.asarray(vec, dtype=np.float32)
    ids = [c for c in wanted if c in vectors]
    matrix = np.stack([vectors[c] for c in ids]) if ids else np.zeros((0, embedder.dim), np.float32)
    return ids, matrix
