"""The Chroma index: one collection of clip vectors per model version, kept in step with the catalogue.

    hs-<workspace>-<model slug>-<hash>   one record per clip: the model's audio embedding + metadata
    hs-<workspace>-captions-minilm       one record per captioned clip: MiniLM of its published caption
                                         (model-independent; the text half of hybrid search)

This module syncs and reads vectors; the store itself (clients, collections, checksums, store
errors) is core.pipeline.index_store and what each record should hold is core.pipeline.index_records,
both re-exported here. A collection whose model changed under the same id is rebuilt rather than
mixed. Syncing is incremental: a clip is embedded only when its audio (recording hash + window) is
new; caption, review-status or metadata changes only rewrite metadata; clips gone from the catalogue
lose their vectors. Each record carries `audio_key` and a fingerprint `fp` of its metadata so a sync
can tell which case applies without touching the audio.

A rebuild (`sync(rebuild=True)`) fills a second collection (`<name>-next`) while the old one keeps
answering searches, then swaps it in by deleting the old one and renaming the new one: an
interrupted or killed rebuild leaves the old index serving. Store errors met by a search (say,
another process rebuilding at that moment) become `IndexBusy`, whose message is for people.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from core.models import registry
from core.models.embedder import Embedder
from core.models.registry import ModelUnavailable
from core.pipeline.index_records import (TOP_TAGS, ClipEntry, _existing,  # noqa: F401  (re-exported)
                                         catalogue_entries, clip_metadata, fingerprint, top_tags)
from core.pipeline.index_store import (BUSY, CAPTIONS_MODEL, CHUNK, HNSW, REBUILD_SUFFIX,  # noqa: F401  (re-exported)
                                       IndexBusy, IndexUnavailable, _clients, _collection, _drop,
                                       _fresh_collection, _lock_for, _recreate, _set_marker, _swap_in,
                                       captions_collection, checksum_of, collection_name, existing_collection,
                                       get_client, has_collection, list_indexes, model_checksum, open_collection,
                                       store_errors, workspace_id)
from core.store import audio
from core.store.workspace import Workspace

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

CATCH_UP_EVERY = 2.0               # seconds between the syncs searches start while the catalogue keeps changing


class ModelNotAvailable(IndexUnavailable, ModelUnavailable):
    """The model to index or search with cannot be had (core.models.registry.ModelUnavailable, its message
    unchanged): callers handling either an index problem or a missing model see it."""


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
