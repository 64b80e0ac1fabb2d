"""The Chroma side of the index: one client per store, collection names and checksums, creating,
dropping and swapping collections, and turning the store's own errors into messages for people.

Collections are created with `embedding_function=None` and always given vectors: Chroma's default
embedding function would download a model. A collection's metadata records the model id, its
dimension and a checksum of its weights. The store is an embedded `PersistentClient` in
`workspace/chroma/`, or a `chroma run` server (`HttpClient`) when `settings.chroma_mode == "http"`;
collection names carry a per-workspace id so two workspaces can share one server safely.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import uuid
from typing import Any, Callable

import numpy as np

from core.models.embedder import Embedder
from core.store.settings import Settings
from core.store.workspace import Workspace

log = logging.getLogger("core.pipeline.index")    # one logger name for every index message

CAPTIONS_MODEL = "captions-minilm"
CHUNK = 2000                       # records per Chroma call when reading, updating or deleting
HNSW = {"hnsw": {"space": "cosine"}}
_PROBE_TEXT = "a dog barks twice, then a car passes in the rain"
REBUILD_SUFFIX = "-next"           # the collection a rebuild fills before it is swapped in
BUSY = "The index is being rebuilt or updated by another process; try again in a moment."


class IndexUnavailable(RuntimeError):
    """An index problem the user can act on (no model yet, server unreachable)."""


class IndexBusy(IndexUnavailable):
    """The store refused a read or write mid-way (e.g. a rebuild in another process): retry later."""


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
