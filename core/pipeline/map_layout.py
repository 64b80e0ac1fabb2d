"""Arrays in, map coordinates out: UMAP layouts and HDBSCAN clusters of embeddings, cached on disk.

`project(clip_ids, embeddings, params)` knows nothing of workspaces; the cache key is
(model id, clip set, vectors, parameters). Caption outliers (`caption_distances`,
`find_outliers`) are plain array maths too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.store.files import write_bytes_atomic

Progress = Callable[[float, str], None]

CACHE_VERSION = 1                  # bump when the cached arrays change meaning
CACHE_KEEP = 40                    # newest cached projections/caption vectors kept; older ones are pruned
DEFAULT_MAX_POINTS = 20_000        # above this, a random sample is projected (noted on screen)
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
    buffer = io.BytesIO()
    arrays = {"clip_ids": p.clip_ids, "coords": p.coords, "clusters": p.clusters, "total": np.int64(p.total)}
    if p.text_coords is not None:
        arrays["text_coords"] = p.text_coords
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue(), suffix="")   # a reader never sees half a file; prune skips it
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
