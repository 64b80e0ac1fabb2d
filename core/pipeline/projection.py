"""The embedding map: UMAP projections of clip embeddings you can colour, cluster and listen to.

Three layers, each usable alone:
- `project(clip_ids, embeddings, params)` — arrays in, 2D/3D coordinates and HDBSCAN
  clusters out; cached on disk by (model id, clip set, parameters).
- `build_map(ws, model)` / `compare_maps(ws, a, b)` — the workspace view: a model's
  clip embeddings, the clip table (caption, tags, review status, metadata), caption
  outliers; two models on the same clips for before/after.
- `figure(map)` / `compare_figure(a, b)` — the plotly scatter the Map tab and
  `python -m core project` both show.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import textwrap
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # keep `import core.pipeline.projection` light: plotly/umap load only when used
    import plotly.graph_objects as go

    from core.models.embedder import Embedder
    from core.store.workspace import Workspace

Progress = Callable[[float, str], None]

CACHE_VERSION = 1                  # bump when the cached arrays change meaning
CACHE_KEEP = 40                    # newest cached projections/caption vectors kept; older ones are pruned
DEFAULT_MAX_POINTS = 20_000        # above this, a random sample is projected (noted on screen)
MAX_CATEGORIES = 20                # colour legend: the most frequent values, the rest become "other"
NONE_VALUE = "(none)"
OTHER_VALUE = "other"
# Colouring fields every map offers; metadata columns (e.g. `label`) are added per workspace.
BUILTIN_FIELDS = ("cluster", "top_tag", "status", "source", "caption_distance")
CONTINUOUS_FIELDS = ("caption_distance",)
EXACT_KNN_METRICS = ("cosine", "euclidean")


class ProjectionCancelled(RuntimeError):
    pass


# -- projection: arrays in, coordinates out ---------------------------------------------------
@dataclass(frozen=True)
class ProjectionParams:
    dims: int = 2                          # 2 or 3
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    seed: int | None = 42                  # None: faster (parallel) but not reproducible
    include_text: bool = False             # caption embeddings in the same projection
    max_points: int = DEFAULT_MAX_POINTS
    min_cluster_size: int | None = None    # HDBSCAN; None: chosen from the number of points

    def __post_init__(self):
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, not {self.dims}")
        if self.n_neighbors < 2:
            raise ValueError("n_neighbors must be at least 2")
        if not 0.0 <= self.min_dist <= 1.0:
            raise ValueError("min_dist must be within [0, 1]")
        if self.max_points < 2:
            raise ValueError("max_points must be at least 2")


@dataclass
class Projection:
    clip_ids: np.ndarray                   # [n] int64: the projected clips (a sample when total > max_points)
    coords: np.ndarray                     # [n, dims] audio points
    clusters: np.ndarray                   # [n] HDBSCAN label per clip, -1 = noise
    text_coords: np.ndarray | None         # [n, dims] caption points (NaN rows: no caption); None unless include_text
    total: int                             # clips offered before sampling
    params: ProjectionParams
    model_id: str = ""
    cached: bool = False
    seconds: float = 0.0

    @property
    def sampled(self) -> bool:
        return len(self.clip_ids) < self.total

    @property
    def note(self) -> str:
        if not self.sampled:
            return f"{self.total:,} clips"
        return (f"Showing a random sample of {len(self.clip_ids):,} of {self.total:,} clips "
                f"(limit {self.params.max_points:,}; seed {self.params.seed})")


def project(clip_ids: Sequence[int], embeddings: np.ndarray, params: ProjectionParams = ProjectionParams(), *,
            text_embeddings: np.ndarray | None = None, model_id: str = "", cache_dir: str | Path | None = None,
            progress: Progress | None = None, cancel: threading.Event | None = None) -> Projection:
    """UMAP of `embeddings` ([N, D], row i belongs to clip_ids[i]) plus HDBSCAN clusters.

    `text_embeddings` ([N, D], NaN rows for clips without a caption) joins the same
    projection when `params.include_text`. With `cache_dir`, the result is stored there and
    a later call with the same model id, clip set, vectors and parameters returns at once.
    """
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    ids = np.asarray(clip_ids, dtype=np.int64)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != len(ids):
        raise ValueError(f"embeddings must be [N, D] with N = {len(ids)} clip ids; got {emb.shape}")
    text = None
    if params.include_text and text_embeddings is not None:
        text = np.asarray(text_embeddings, dtype=np.float32)
        if text.shape != emb.shape:
            raise ValueError(f"text embeddings {text.shape} must match audio embeddings {emb.shape}")

    total = len(ids)
    keep = _sample(total, params)
    ids, emb = ids[keep], emb[keep]
    text = text[keep] if text is not None else None

    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_cache_key(model_id, ids, emb, text, params)}.npz"
        if path.exists():
            hit = _load(path, params, model_id)
            if hit is not None:
                hit.seconds = time.perf_counter() - started
                report(1.0, "loaded from cache")
                return hit

    has_text = None if text is None else ~np.isnan(text).any(axis=1)
    points = emb if text is None else np.vstack([emb, text[has_text]])
    coords_all = fit_umap(points, params, progress=report, cancel=cancel)
    coords = coords_all[:len(ids)]
    text_coords = None
    if text is not None:
        text_coords = np.full((len(ids), params.dims), np.nan, dtype=np.float32)
        text_coords[has_text] = coords_all[len(ids):]
    if cancel is not None and cancel.is_set():
        raise ProjectionCancelled("projection cancelled")
    report(0.95, "finding clusters")
    clusters = find_clusters(coords, params.min_cluster_size)

    result = Projection(ids, coords, clusters, text_coords, total, params, model_id)
    if path is not None:
        _save(path, result)
    result.seconds = time.perf_counter() - started
    report(1.0, "done")
    return result


def _sample(n: int, params: ProjectionParams) -> np.ndarray:
    """Indices to project: all of them, or a reproducible random sample above the limit (input order kept)."""
    if n <= params.max_points:
        return np.arange(n)
    rng = np.random.default_rng(params.seed if params.seed is not None else 0)
    return np.sort(rng.choice(n, params.max_points, replace=False))


def fit_umap(points: np.ndarray, params: ProjectionParams, progress: Progress | None = None,
             cancel: threading.Event | None = None) -> np.ndarray:
    """[N, D] → [N, dims] float32 with umap-learn; tiny inputs get a trivial layout instead of an error."""
    report = progress or (lambda fraction, message: None)
    n = len(points)
    if n == 0:
        return np.zeros((0, params.dims), dtype=np.float32)
    if n <= 2:   # UMAP needs a neighbourhood; two points are just two points
        return np.eye(n, params.dims, dtype=np.float32)
    report(0.05, f"finding neighbours of {n:,} points")
    n_neighbors = max(2, min(params.n_neighbors, n - 1))
    knn = None
    if n >= 4096 and params.metric in EXACT_KNN_METRICS:
        # UMAP's approximate search (NN-descent) compiles and runs slowly on 2 cores;
        # an exact search by blocked matrix products is faster up to tens of thousands of points.
        knn = exact_knn(points, n_neighbors, params.metric)
    if cancel is not None and cancel.is_set():
        raise ProjectionCancelled("projection cancelled")
    report(0.3, f"laying out {n:,} points in {params.dims}D")
    with _umap() as umap:
        reducer = umap.UMAP(
            n_components=params.dims, n_neighbors=n_neighbors, min_dist=params.min_dist, metric=params.metric,
            random_state=params.seed, n_jobs=1 if params.seed is not None else -1,
            # UMAP's default is 500 epochs up to 10k points; 200 (its large-data default) looks the same
            # at well under half the time.
            n_epochs=200 if n >= 2000 else None,
            init="spectral" if n > params.dims + 8 else "random",
            precomputed_knn=knn if knn is not None else (None, None, None),
            low_memory=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # n_jobs/seed and disconnected-vertex notes are expected here
            coords = reducer.fit_transform(points)
    return np.asarray(coords, dtype=np.float32)


_UMAP_LOCK = threading.Lock()


@contextmanager
def _umap():
    """Import and run umap-learn with numba's on-disk cache switched on for its kernels.

    umap-learn compiles its layout kernels without `cache=True`, which costs ~15–60 s of
    JIT on every process start on 2 cores; with the cache, only the very first run pays.
    One fit at a time: on 2 cores two parallel fits are only slower, and the patch of
    `numba.njit` must not interleave.
    """
    import numba

    with _UMAP_LOCK:
        original = numba.njit

        def njit_cached(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return original(*args, **kwargs)

        numba.njit = njit_cached
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # closures numba cannot cache just stay uncached
                import umap
                yield umap
        finally:
            numba.njit = original


def exact_knn(points: np.ndarray, k: int, metric: str = "cosine", block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (self first) as UMAP's `precomputed_knn`: (indices int32, distances float32)."""
    x = np.asarray(points, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sq = (x * x).sum(axis=1)
    n = len(x)
    indices = np.empty((n, k), dtype=np.int32)
    distances = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sim = x[start:stop] @ x.T
        if metric == "cosine":
            dist = 1.0 - sim
        else:
            dist = np.sqrt(np.maximum(sq[start:stop, None] + sq[None, :] - 2.0 * sim, 0.0))
        rows = np.arange(stop - start)
        dist[rows, rows + start] = -1.0   # each point is its own first neighbour, whatever the rounding
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        part_dist = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(part_dist, axis=1)
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        distances[start:stop] = np.maximum(np.take_along_axis(part_dist, order, axis=1), 0.0)
    return indices, distances


def find_clusters(coords: np.ndarray, min_cluster_size: int | None = None) -> np.ndarray:
    """HDBSCAN labels on the map's own coordinates (so clusters match what the eye sees); -1 = noise."""
    n = len(coords)
    size = min_cluster_size or max(3, min(50, int(round(np.sqrt(n) / 2))))
    if n < max(size, 3):
        return np.full(n, -1, dtype=np.int64)
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(min_cluster_size=size, copy=True).fit_predict(coords).astype(np.int64)


def _cache_key(model_id: str, ids: np.ndarray, emb: np.ndarray, text: np.ndarray | None,
               params: ProjectionParams) -> str:
    # The vectors are hashed too: re-indexed clips or a retrained model under the same id never hit a stale map.
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "model": model_id, "params": dataclasses.asdict(params)},
                        sort_keys=True).encode())
    for array in (ids, emb) + ((text,) if text is not None else ()):
        h.update(str(array.shape).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[:60] or "model"
    return f"{safe_model}-{h.hexdigest()[:32]}"


def _save(path: Path, p: Projection) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    arrays = {"clip_ids": p.clip_ids, "coords": p.coords, "clusters": p.clusters, "total": np.int64(p.total)}
    if p.text_coords is not None:
        arrays["text_coords"] = p.text_coords
    np.savez(buffer, **arrays)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)      # atomic: a reader never sees half a file
    prune_cache(path.parent)


def prune_cache(folder: Path, keep: int = CACHE_KEEP) -> None:
    """Keep the newest `keep` projections and the newest `keep` caption-vector files; they are derived data."""
    def mtime(f: Path) -> float:
        try:
            return f.stat().st_mtime
        except FileNotFoundError:   # pruned by another thread meanwhile
            return 0.0

    for pattern in ("*.npz", "text-*.npy"):
        for old in sorted(folder.glob(pattern), key=mtime, reverse=True)[keep:]:
            old.unlink(missing_ok=True)


def _load(path: Path, params: ProjectionParams, model_id: str) -> Projection | None:
    try:
        with np.load(path) as data:
            text = data["text_coords"] if "text_coords" in data.files else None
            return Projection(data["clip_ids"], data["coords"], data["clusters"], text, int(data["total"]),
                              params, model_id, cached=True)
    except (OSError, ValueError, KeyError):
        return None          # a damaged cache file is recomputed, not fatal


# -- caption outliers -----------------------------------------------------------------------------
def caption_distances(audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """1 − cosine between each clip and its own caption ([N]); NaN where a clip has no caption."""
    a = np.asarray(audio, dtype=np.float32)
    t = np.asarray(text, dtype=np.float32)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return (1.0 - (a * t).sum(axis=1)).astype(np.float32)


def find_outliers(distances: np.ndarray, z: float = 2.5, min_gap: float = 0.1) -> np.ndarray:
    """Clips whose caption distance is unusually large: robust z-score (median/MAD) above `z`
    and at least `min_gap` (in cosine distance) beyond the median.

    Relative, not absolute: audio and text sit apart in any two-tower model (the modality
    gap), so only a clip much farther from its caption than its peers is suspicious; the gap
    floor keeps a tight, well-captioned set from flagging tiny differences.
    """
    d = np.asarray(distances, dtype=np.float64)
    valid = ~np.isnan(d)
    out = np.zeros(len(d), dtype=bool)
    if valid.sum() < 3:
        return out
    median = np.median(d[valid])
    spread = 1.4826 * np.median(np.abs(d[valid] - median))
    if spread <= 1e-9:
        spread = d[valid].std()
    if spread <= 1e-9:
        return out
    out[valid] = ((d[valid] - median) / spread > z) & (d[valid] - median > min_gap)
    return out


# -- the workspace view ---------------------------------------------------------------------------
@dataclass
class MapData:
    """One model's map of the workspace: a row per shown clip, ready to colour and plot."""
    model_id: str
    points: pd.DataFrame        # clip_id, x, y[, z], text_x…, caption, tags, top_tag, status, source, name,
                                # cluster, caption_distance, outlier, metadata columns
    projection: Projection
    meta_fields: list[str] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        """Colouring choices: metadata columns (e.g. label) first, then the built-in ones it has
        (a visitor's map has no review status)."""
        return self.meta_fields + [f for f in BUILTIN_FIELDS if f not in self.meta_fields and f in self.points]

    @property
    def dims(self) -> int:
        return self.projection.params.dims

    @property
    def note(self) -> str:
        text = f"{self.model_id}: {self.projection.note}"
        if self.projection.cached:
            text += " · from cache"
        n_out = int(self.points["outlier"].sum()) if len(self.points) else 0
        if n_out:
            text += f" · {n_out} caption outlier{'s' if n_out != 1 else ''}"
        return text

    def default_color(self) -> str:
        """The first readable field: label, else the teacher's top tag, else the source, else clusters.

        Readable = at least two values and no more than the legend shows (MAX_CATEGORIES).
        """
        for name in ("label", "top_tag", "source"):
            if name in self.points:
                values = set(self.points[name].astype(str)) - {NONE_VALUE, ""}
                if 2 <= len(values) <= MAX_CATEGORIES:
                    return name
        return "cluster"


class MapUnavailable(ValueError):
    """The map cannot be drawn yet for a reason the user can act on (no model, nothing indexed)."""


def _index_module():
    """core.pipeline.index when it is installed (it owns the vector store), else None."""
    try:
        from core.pipeline import index
    except ModuleNotFoundError as exc:
        if exc.name != "core.pipeline.index":
            raise
        return None
    return index


def model_choices(ws: "Workspace") -> list[str]:
    """Names a model picker offers: "active", then every known model id (shipped and trained)."""
    try:
        from core.models.registry import available_models
        ids = [m["id"] for m in available_models(ws)]
    except ModuleNotFoundError:
        ids = [m.id for m in ws.catalog.models()]
    return ["active"] + [i for i in ids if i != "active"]


def resolve_model(ws: "Workspace", model: str = "active") -> "Embedder":
    """The embedder for a model name ("active", "shipped", a registered model id or a checkpoint folder)."""
    index = _index_module()
    try:
        if index is not None:
            return index.resolve_embedder(ws, model)
        from core.models.registry import get_embedder   # lazy: the student stack is heavy
        return get_embedder(name=model, ws=ws)
    except ModuleNotFoundError as exc:
        raise MapUnavailable(f"No student model can be loaded yet ({exc}): train one in the Train tab.") from exc
    except (KeyError, FileNotFoundError) as exc:
        raise MapUnavailable(f"Model {model!r} is not available: {exc}") from exc
    except RuntimeError as exc:
        if index is not None and isinstance(exc, index.IndexUnavailable):
            raise MapUnavailable(str(exc)) from exc
        raise


def clip_embeddings(ws: "Workspace", embedder: "Embedder", clip_ids: Sequence[int] | None = None,
                    progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> tuple[list[int], np.ndarray]:
    """Audio embeddings of the workspace's clips under `embedder`: read from the index (core.pipeline.index),
    which embeds what it lacks first; straight from the audio when there is no index module."""
    index = _index_module()
    if index is None:
        return embed_clips(ws, embedder, clip_ids)
    try:
        if clip_ids is None and progress is not None:
            # index what is missing with visible progress; get_embeddings then only reads
            index.ensure_current(ws, embedder, cancel=cancel,
                                 progress=lambda done, total, name: progress(done / max(total, 1),
                                                                             f"indexing {done}/{total} clips"))
        ids, vectors = index.get_embeddings(ws, embedder, clip_ids)
    except index.IndexUnavailable as exc:
        raise MapUnavailable(str(exc)) from exc
    return list(ids), np.asarray(vectors, dtype=np.float32)


def embed_clips(ws: "Workspace", embedder: "Embedder", clip_ids: Sequence[int] | None = None,
                batch: int = 32) -> tuple[list[int], np.ndarray]:
    """Embed clips straight from their audio (no index): the fallback when no store is there."""
    ids = list(clip_ids) if clip_ids is not None else ws.catalog.clip_ids()
    parts = [embedder.embed_audio([ws.load_clip(int(c)) for c in ids[i:i + batch]]) for i in range(0, len(ids), batch)]
    dim = int(getattr(embedder, "dim", 0) or 0)
    return ids, (np.vstack(parts).astype(np.float32) if parts else np.zeros((0, dim), dtype=np.float32))


def caption_embeddings(embedder: "Embedder", captions: Sequence[str], cache_dir: Path | None = None) -> np.ndarray:
    """[N, D] text embeddings of the captions (NaN rows for empty ones), cached on disk by model and texts."""
    texts = [c or "" for c in captions]
    dim = int(getattr(embedder, "dim", 0) or 0)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([embedder.model_id, texts]).encode()).hexdigest()[:32]
        path = Path(cache_dir) / f"text-{key}.npy"
        if path.exists():
            try:
                return np.load(path)
            except (OSError, ValueError):
                pass
    wanted = [i for i, t in enumerate(texts) if t.strip()]
    unique = sorted({texts[i] for i in wanted})
    vectors = np.asarray(embedder.embed_text(unique), dtype=np.float32) if unique else np.zeros((0, dim), np.float32)
    dim = vectors.shape[1] if len(vectors) else dim
    by_text = dict(zip(unique, vectors))
    out = np.full((len(texts), dim), np.nan, dtype=np.float32)
    for i in wanted:
        out[i] = by_text[texts[i]]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_ident()}.tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
        prune_cache(path.parent)
    return out


def clip_table(ws: "Workspace", clip_ids: Sequence[int], public: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """What the map shows per clip, in `clip_ids` order, plus the metadata column names found.

    Columns: clip_id, recording_id, name, source, start, end, caption, tags, top_tag, status,
    then one column per recording metadata key (e.g. label). `public` (what visitors read,
    core/auth/published.py): the published caption and its tags, and no status column.
    """
    from core.store.catalog import REVIEW_STATUSES

    catalog = ws.catalog
    wanted = [int(c) for c in clip_ids]
    clips = {c.id: c for c in catalog.clips()}
    recordings = {r.id: r for r in catalog.recordings()}
    captions = catalog.published_captions(wanted) if public else catalog.current_captions(wanted)
    status = {}
    for s in () if public else REVIEW_STATUSES:
        status.update(dict.fromkeys(catalog.clip_ids_by_status(s), s))

    meta_keys: list[str] = []
    rows = []
    for cid in wanted:
        clip = clips.get(cid)
        rec = recordings.get(clip.recording_id) if clip else None
        cap = captions.get(cid)
        tags = dict(cap.tags) if cap and cap.tags else {}
        if cap is not None and not tags and cap.origin != "teacher":
            # an edited caption carries no tags: show the teacher's from the history
            teacher = [c for c in catalog.captions(cid) if c.origin == "teacher" and c.tags]
            tags = dict(teacher[-1].tags) if teacher else {}
        ranked = [t for t, _ in sorted(tags.items(), key=lambda kv: -_score(kv[1]))]
        row = {
            "clip_id": cid,
            "recording_id": clip.recording_id if clip else -1,
            "name": rec.original_name if rec else "",
            "source": (rec.source if rec else "") or NONE_VALUE,
            "start": clip.start if clip else 0.0,
            "end": clip.end if clip else 0.0,
            "caption": cap.text if cap else "",
            "tags": ", ".join(ranked[:5]),
            "top_tag": ranked[0] if ranked else NONE_VALUE,
        }
        if not public:
            row["status"] = status.get(cid, "pending")
        for key, value in (rec.meta if rec else {}).items():
            column = key if key not in row and key not in BUILTIN_FIELDS else f"meta_{key}"
            if column not in meta_keys:
                meta_keys.append(column)
            row[column] = "" if value is None else str(value)
        rows.append(row)
    columns = ["clip_id", "recording_id", "name", "source", "start", "end", "caption", "tags", "top_tag"]
    table = pd.DataFrame(rows, columns=columns + ([] if public else ["status"]) + meta_keys)
    for key in meta_keys:
        table[key] = table[key].fillna("").replace("", NONE_VALUE)
    # label-like columns first: they are what people colour by
    meta_keys.sort(key=lambda k: (k != "label", k))
    return table, meta_keys


def _score(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def map_from_embeddings(ws: "Workspace", model_id: str, clip_ids: Sequence[int], embeddings: np.ndarray,
                        params: ProjectionParams = ProjectionParams(), *,
                        embed_text: Callable[[Sequence[str]], np.ndarray] | None = None, outlier_z: float = 2.5,
                        progress: Progress | None = None, cancel: threading.Event | None = None,
                        public: bool = False) -> MapData:
    """The map of given clip embeddings: table + captions' embeddings + projection + outliers.
    `public`: the visitors' view (published captions, no review status; see clip_table)."""
    report = progress or (lambda fraction, message: None)
    ids = [int(c) for c in clip_ids]
    emb = np.asarray(embeddings, dtype=np.float32)
    report(0.0, "reading the catalogue")
    table, meta_fields = clip_table(ws, ids, public=public)
    cache = ws.cache_dir / "projections"
    text = None
    if embed_text is not None and (table["caption"] != "").any():
        report(0.02, "embedding captions")
        text = caption_embeddings(_TextOnly(model_id, embed_text, emb.shape[1]), table["caption"].tolist(), cache)

    def stage(fraction: float, message: str) -> None:
        report(0.05 + 0.95 * fraction, message)

    proj = project(ids, emb, params, text_embeddings=text, model_id=model_id, cache_dir=cache,
                   progress=stage, cancel=cancel)
    position = {cid: i for i, cid in enumerate(ids)}
    rows = np.array([position[int(c)] for c in proj.clip_ids], dtype=np.int64)
    points = table.iloc[rows].reset_index(drop=True)
    axes = ["x", "y", "z"][:params.dims]
    for j, axis in enumerate(axes):
        points[axis] = proj.coords[:, j]
        if proj.text_coords is not None:
            points[f"text_{axis}"] = proj.text_coords[:, j]
    points["cluster"] = [NONE_VALUE if c < 0 else f"cluster {c}" for c in proj.clusters]
    if text is not None:
        points["caption_distance"] = caption_distances(emb[rows], text[rows])
    else:
        points["caption_distance"] = np.nan
    points["outlier"] = find_outliers(points["caption_distance"].to_numpy(), outlier_z)
    return MapData(model_id, points, proj, meta_fields)


@dataclass
class _TextOnly:
    """Adapts a bare embed_text function to what caption_embeddings needs."""
    model_id: str
    embed_text: Callable[[Sequence[str]], np.ndarray]
    dim: int


def build_map(ws: "Workspace", model: "str | Embedder" = "active", params: ProjectionParams = ProjectionParams(), *,
              clip_ids: Sequence[int] | None = None, with_captions: bool = True, outlier_z: float = 2.5,
              progress: Progress | None = None, cancel: threading.Event | None = None,
              public: bool = False) -> MapData:
    """The map of a model ("active", a model id, or an Embedder) over the workspace's clips
    (`public`: as visitors may read it)."""
    report = progress or (lambda fraction, message: None)
    embedder = resolve_model(ws, model) if isinstance(model, str) else model
    report(0.0, f"embeddings of {embedder.model_id}")
    ids, emb = clip_embeddings(ws, embedder, clip_ids, progress=lambda f, m: report(0.1 * f, m), cancel=cancel)
    if not len(ids):
        raise MapUnavailable("No clip embeddings yet: import audio, then build the index "
                         "(Search tab, or `python -m core index`).")
    return map_from_embeddings(ws, embedder.model_id, ids, emb, params,
                               embed_text=embedder.embed_text if with_captions else None, outlier_z=outlier_z,
                               progress=lambda f, m: report(0.1 + 0.9 * f, m), cancel=cancel, public=public)


def compare_maps(ws: "Workspace", model_a: "str | Embedder", model_b: "str | Embedder",
                 params: ProjectionParams = ProjectionParams(), *, with_captions: bool = True,
                 outlier_z: float = 2.5, progress: Progress | None = None,
                 cancel: threading.Event | None = None, public: bool = False) -> tuple[MapData, MapData]:
    """Before/after: two models' maps over the same clips, the second rotated to line up with the first."""
    report = progress or (lambda fraction, message: None)
    a = resolve_model(ws, model_a) if isinstance(model_a, str) else model_a
    b = resolve_model(ws, model_b) if isinstance(model_b, str) else model_b
    ids_a, emb_a = clip_embeddings(ws, a, progress=lambda f, m: report(0.05 * f, f"{a.model_id}: {m}"))
    ids_b, emb_b = clip_embeddings(ws, b, progress=lambda f, m: report(0.05 + 0.05 * f, f"{b.model_id}: {m}"))
    common = sorted(set(map(int, ids_a)) & set(map(int, ids_b)))
    if not common:
        raise MapUnavailable(f"{a.model_id} and {b.model_id} share no embedded clips: index both first.")
    pick_a = {int(c): i for i, c in enumerate(ids_a)}
    pick_b = {int(c): i for i, c in enumerate(ids_b)}
    emb_a = emb_a[[pick_a[c] for c in common]]
    emb_b = emb_b[[pick_b[c] for c in common]]
    map_a = map_from_embeddings(ws, a.model_id, common, emb_a, params,
                                embed_text=a.embed_text if with_captions else None, outlier_z=outlier_z,
                                progress=lambda f, m: report(0.1 + 0.45 * f, f"{a.model_id}: {m}"), cancel=cancel,
                                public=public)
    map_b = map_from_embeddings(ws, b.model_id, common, emb_b, params,
                                embed_text=b.embed_text if with_captions else None, outlier_z=outlier_z,
                                progress=lambda f, m: report(0.55 + 0.45 * f, f"{b.model_id}: {m}"), cancel=cancel,
                                public=public)
    align(map_b, map_a)
    return map_a, map_b


def align(moving: MapData, reference: MapData) -> None:
    """Rotate/reflect/scale `moving`'s layout onto `reference` (orthogonal Procrustes on shared clips).

    UMAP's axes are arbitrary: without this, the same clips land in unrelated corners and
    the eye cannot compare the two maps.
    """
    from scipy.linalg import orthogonal_procrustes

    axes = ["x", "y", "z"][:reference.dims]
    ref = reference.points.set_index("clip_id")[axes]
    mov = moving.points.set_index("clip_id")[axes]
    shared = ref.index.intersection(mov.index)
    if len(shared) < reference.dims + 1 or moving.dims != reference.dims:
        return
    r = ref.loc[shared].to_numpy(np.float64)
    m = mov.loc[shared].to_numpy(np.float64)
    r_mean, m_mean = r.mean(axis=0), m.mean(axis=0)
    rotation, _ = orthogonal_procrustes(m - m_mean, r - r_mean)
    scale = np.linalg.norm(r - r_mean) / max(np.linalg.norm(m - m_mean), 1e-12)

    def move(values: np.ndarray) -> np.ndarray:
        return ((values - m_mean) @ rotation) * scale + r_mean

    moving.points[axes] = move(moving.points[axes].to_numpy(np.float64))
    text_axes = [f"text_{a}" for a in axes]
    if all(c in moving.points for c in text_axes):
        moving.points[text_axes] = move(moving.points[text_axes].to_numpy(np.float64))


# -- the table beside the map, and sending clips back to review -------------------------------------
def points_table(data: MapData, color: str = "cluster", query: str = "", outliers_only: bool = False,
                 limit: int = 500, clip_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """The visible points as rows (clip, colour value, caption, tags, status, distance): what the tab lists.
    `clip_ids`: only those clips, in that order (a selection made on the map)."""
    p = data.points
    if clip_ids is not None:
        order = {int(c): i for i, c in enumerate(clip_ids)}
        p = p[p["clip_id"].isin(order)].sort_values("clip_id", key=lambda c: c.map(order))
    if outliers_only:
        p = p[p["outlier"]]
    if query.strip():
        q = query.strip().lower()
        hay = (p["caption"] + " " + p["tags"] + " " + p["name"] + " " + _values(p, color)).str.lower()
        p = p[hay.str.contains(q, regex=False)]
    if outliers_only or color == "caption_distance":
        p = p.sort_values("caption_distance", ascending=False, na_position="last")
    p = p.head(limit)
    table = pd.DataFrame({
        "clip": p["clip_id"].astype(int),
        color: _values(p, color),
        "caption": p["caption"],
        "tags": p["tags"],
        "status": p["status"] if "status" in p else None,
        "distance": p["caption_distance"].astype("float64").round(3),
        "outlier": p["outlier"].map({True: "yes", False: ""}),
        "file": p["name"],
    })
    return table if "status" in p else table.drop(columns="status")   # a visitor's map: no review status


def _values(points: pd.DataFrame, color: str) -> pd.Series:
    if color not in points:
        raise KeyError(f"unknown colouring field {color!r}")
    if color in CONTINUOUS_FIELDS:
        return points[color].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return points[color].astype(str)


@dataclass
class SendReport:
    sent: list[int] = field(default_factory=list)
    already_pending: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)      # someone saved between our read and write
    missing: list[int] = field(default_factory=list)        # no such clip (deleted meanwhile)

    def summary(self) -> str:
        text = f"{len(self.sent)} sent to review"
        if self.already_pending:
            text += f", {len(self.already_pending)} already pending"
        if self.missing:
            text += f", {len(self.missing)} no longer in the catalogue"
        if self.conflicts:
            text += f", {len(self.conflicts)} changed by someone else meanwhile (left as they are)"
        return text


def send_to_review(ws: "Workspace", clip_ids: Sequence[int], *, annotator: str | None = None,
                   reason: str = "map: sent back to review") -> SendReport:
    """Put clips back in the review queue (status pending), never overwriting a concurrent save."""
    from core.store.catalog import ConflictError

    report = SendReport()
    for cid in dict.fromkeys(int(c) for c in clip_ids):
        try:
            ws.catalog.get_clip(cid)
        except KeyError:
            report.missing.append(cid)
            continue
        current = ws.catalog.get_review(cid)
        if current.status == "pending":
            report.already_pending.append(cid)
            continue
        try:
            ws.catalog.save_review(cid, status="pending", expected_version=current.version, annotator=annotator,
                                   caption_id=current.caption_id, reason=reason, action="send-to-review")
        except ConflictError:
            report.conflicts.append(cid)
        else:
            report.sent.append(cid)
    return report


# -- figures --------------------------------------------------------------------------------------
_NOISE_COLOUR = "#b8b8b8"


def category_colours(values: Sequence[str]) -> dict[str, str]:
    """Value → colour, stable for the same values (so two maps side by side share a legend)."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3 + qualitative.Set2 + qualitative.Dark24
    counts = pd.Series(list(values)).value_counts()
    ordered = sorted(counts.index, key=lambda v: (v in (NONE_VALUE, OTHER_VALUE), -counts[v], v))
    colours, i = {}, 0
    for value in ordered:
        if value in (NONE_VALUE, OTHER_VALUE):
            colours[value] = _NOISE_COLOUR
        else:
            colours[value] = palette[i % len(palette)]
            i += 1
    return colours


def _categories(points: pd.DataFrame, color: str) -> pd.Series:
    """The colour field as at most MAX_CATEGORIES values (rarer ones become "other")."""
    values = points[color].astype(str).replace("", NONE_VALUE)
    top = [v for v in values.value_counts().index if v not in (NONE_VALUE, OTHER_VALUE)][:MAX_CATEGORIES]
    return values.where(values.isin(top + [NONE_VALUE]), OTHER_VALUE)


def _hover(points: pd.DataFrame, color: str) -> tuple[np.ndarray, str]:
    wrap = [("<br>".join(textwrap.wrap(c, 60)) if c else "<i>no caption</i>") for c in points["caption"]]
    # customdata[0] is the clip id: the page's click bridge (ui/map.py) reads it
    status = points["status"] if "status" in points else pd.Series("", index=points.index)
    custom = np.column_stack([points["clip_id"].astype(int), wrap, points["tags"].replace("", "—"),
                              status, _values(points, color), points["name"]])
    status_line = "<br>status: %{customdata[3]}" if "status" in points else ""    # never on a visitor's map
    template = (f"<b>%{{customdata[1]}}</b><br>tags: %{{customdata[2]}}{status_line}"
                f"<br>{color}: %{{customdata[4]}}<br>clip %{{customdata[0]}} · %{{customdata[5]}}<extra></extra>")
    return custom, template


def _traces(data: MapData, color: str, highlight_outliers: bool, selected: int | None,
            colours: dict[str, str] | None, show_legend: bool) -> list:
    import plotly.graph_objects as go

    p = data.points
    three = data.dims == 3
    axes = ["x", "y", "z"] if three else ["x", "y"]
    many = len(p) > 5000 and not three
    Scatter = go.Scatter3d if three else (go.Scattergl if many else go.Scatter)
    size = 4 if three else (5 if many else 9)

    def xyz(frame: pd.DataFrame, prefix: str = "") -> dict:
        return {a: frame[prefix + a].to_numpy() for a in axes}

    traces = []
    has_text = f"text_{axes[0]}" in p
    if color in CONTINUOUS_FIELDS:
        custom, template = _hover(p, color)
        traces.append(Scatter(**xyz(p), mode="markers", name="clips", customdata=custom, hovertemplate=template,
                              showlegend=False,
                              marker=dict(size=size, color=p[color].to_numpy(), colorscale="Viridis",
                                          showscale=show_legend, colorbar=dict(title=color))))
    else:
        cats = _categories(p, color)
        colours = colours or category_colours(cats)
        for value in sorted(cats.unique(), key=lambda v: (v in (NONE_VALUE, OTHER_VALUE), -(cats == v).sum(), v)):
            part = p[cats == value]
            custom, template = _hover(part, color)
            traces.append(Scatter(**xyz(part), mode="markers", name=value, legendgroup=value, showlegend=show_legend,
                                  customdata=custom, hovertemplate=template,
                                  marker=dict(size=size, color=colours.get(value, _NOISE_COLOUR), opacity=0.85)))
            if has_text:
                captioned = part[part[f"text_{axes[0]}"].notna()]
                if len(captioned):
                    traces.append(Scatter(**xyz(captioned, "text_"), mode="markers", name=f"{value} (caption)",
                                          legendgroup=value, showlegend=False, customdata=_hover(captioned, color)[0],
                                          hovertemplate="caption of " + template,
                                          marker=dict(size=size, symbol="x",
                                                      color=colours.get(value, _NOISE_COLOUR), opacity=0.6)))
    if highlight_outliers and p["outlier"].any():
        out = p[p["outlier"]]
        custom, template = _hover(out, color)
        traces.append(Scatter(**xyz(out), mode="markers", name="caption outlier", legendgroup="outlier",
                              showlegend=show_legend, customdata=custom, hovertemplate="OUTLIER " + template,
                              marker=dict(size=size + 8, symbol="circle-open", color="#d62728",
                                          line=dict(width=2, color="#d62728"))))
    if selected is not None and (p["clip_id"] == int(selected)).any():
        sel = p[p["clip_id"] == int(selected)]
        custom, template = _hover(sel, color)
        traces.append(Scatter(**xyz(sel), mode="markers", name="selected", legendgroup="selected",
                              showlegend=show_legend, customdata=custom, hovertemplate=template,
                              marker=dict(size=size + 12, symbol="diamond-open" if three else "star-open",
                                          color="black", line=dict(width=2, color="black"))))
    return traces


def _layout(fig: "go.Figure", title: str, height: int) -> None:
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)), height=height,
                      margin=dict(l=10, r=10, t=50, b=10),
                      # legend below the plot: on a phone a side legend takes half the map's width
                      legend=dict(itemsizing="constant", orientation="h", yanchor="top", y=-0.02, x=0),
                      template="plotly_white", hoverlabel=dict(align="left"))
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False)
    # UMAP axes have no units: hide their numbers in 3D too
    hidden = dict(showticklabels=False, title="")
    fig.update_scenes(xaxis=hidden, yaxis=hidden, zaxis=hidden)


def figure(data: MapData, color: str | None = None, *, highlight_outliers: bool = True, selected: int | None = None,
           height: int = 620) -> "go.Figure":
    """The map as a plotly scatter (2D or 3D), coloured by `color`, hover showing caption and tags."""
    import plotly.graph_objects as go

    color = color or data.default_color()
    if color not in data.points:
        raise KeyError(f"unknown colouring field {color!r}; choose from {data.fields}")
    fig = go.Figure(_traces(data, color, highlight_outliers, selected, None, True))
    legend = " · ● audio ✕ caption" if any(c.startswith("text_") for c in data.points) else ""
    _layout(fig, f"{data.note} · colour: {color}{legend}", height)
    return fig


def compare_figure(a: MapData, b: MapData, color: str | None = None, *, highlight_outliers: bool = True,
                   selected: int | None = None, height: int = 620) -> "go.Figure":
    """Two maps side by side with one legend and the same colours (before/after)."""
    from plotly.subplots import make_subplots

    color = color or a.default_color()
    for d in (a, b):
        if color not in d.points:
            raise KeyError(f"unknown colouring field {color!r}; choose from {d.fields}")
    spec = {"type": "scene"} if a.dims == 3 else {"type": "xy"}
    fig = make_subplots(rows=1, cols=2, specs=[[spec, spec]], horizontal_spacing=0.03,
                        subplot_titles=[a.note, b.note])
    colours = None
    if color not in CONTINUOUS_FIELDS:
        colours = category_colours(pd.concat([_categories(a.points, color), _categories(b.points, color)]))
    for col, d in ((1, a), (2, b)):
        for trace in _traces(d, color, highlight_outliers, selected, colours, show_legend=col == 1):
            fig.add_trace(trace, row=1, col=col)
    _layout(fig, f"before / after · colour: {color}", height)
    return fig


def write_html(fig: "go.Figure", path: str | Path) -> Path:
    """A standalone HTML file (plotly.js inlined: opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path
