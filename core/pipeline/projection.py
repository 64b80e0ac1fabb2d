"""The embedding map of a workspace: UMAP projections of clip embeddings you can colour, cluster and listen to.

`build_map(ws, model)` / `compare_maps(ws, a, b)` — a model's clip embeddings, the clip
table, caption outliers; two models on the same clips for before/after. The layers it
stands on, each usable alone (and re-exported here, the map's one front door):
- core.pipeline.map_layout — `project(clip_ids, embeddings, params)`: arrays in, 2D/3D
  coordinates and HDBSCAN clusters out, cached on disk;
- core.pipeline.map_table — the per-clip table, the rows listed beside the plot, send to review;
- core.pipeline.map_plots — `figure(map)` / `compare_figure(a, b)`: the plotly scatter the
  Map tab and `python -m core project` both show.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from core.pipeline.map_layout import (CACHE_KEEP, CACHE_VERSION, DEFAULT_MAX_POINTS,  # noqa: F401  (re-exported)
                                      EXACT_KNN_METRICS, Progress, Projection, ProjectionCancelled,
                                      ProjectionParams, caption_distances, exact_knn, find_clusters,
                                      find_outliers, fit_umap, project, prune_cache)
from core.pipeline.map_plots import (MAX_CATEGORIES, OTHER_VALUE, category_colours,  # noqa: F401  (re-exported)
                                     compare_figure, figure, write_html)
from core.pipeline.map_table import (BUILTIN_FIELDS, CONTINUOUS_FIELDS, NONE_VALUE,  # noqa: F401  (re-exported)
                                     SendReport, clip_table, points_table, send_to_review)
from core.store.files import atomic_write

if TYPE_CHECKING:  # keep `import core.pipeline.projection` light: the student stack loads only when used
    from core.models.embedder import Embedder
    from core.store.workspace import Workspace


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
    """core.pipeline.index, which owns the vector store; lazy, as Chroma is heavy to import. Tests replace
    this with None to draw a map straight from the audio, apart from the store."""
    from core.pipeline import index
    return index


def model_choices(ws: "Workspace") -> list[str]:
    """Names a model picker offers: "active", then every known model id (shipped and trained)."""
    from core.models.registry import choices
    return choices(ws, "active")


def resolve_model(ws: "Workspace", model: str = "active") -> "Embedder":
    """The embedder for a model name ("active", "shipped", a registered model id or a checkpoint folder);
    raises core.models.registry.ModelUnavailable (a KeyError) when there is none."""
    from core.pipeline.index import resolve_embedder    # lazy: the vector store is heavy
    return resolve_embedder(ws, model)


def clip_embeddings(ws: "Workspace", embedder: "Embedder", clip_ids: Sequence[int] | None = None,
                    progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> tuple[list[int], np.ndarray]:
    """Audio embeddings of the workspace's clips under `embedder`: read from the index (core.pipeline.index),
    which embeds what it lacks first; straight from the audio when `_index_module` gives none."""
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
    """Embed clips straight from their audio, without the index."""
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
        with atomic_write(path, suffix="") as tmp, open(tmp, "wb") as fh:   # no .npy: prune_cache skips it
            np.save(fh, out)
        prune_cache(path.parent)
    return out




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
