"""Search over the Chroma index: text → clips, audio → clips, "more like this", zero-shot labels.

Every query goes through one model's collection (see core/pipeline/index.py). Scores are cosine
similarities. Hybrid search blends the model's score with the similarity between the query and
each clip's published caption (MiniLM, the caption collection) by a weight, late fusion
(core/pipeline/fusion.py, the same function `training evaluate --fusion` measures):

    score ∝ (1 - w) · z(model_score) + w · z(caption_score)     z-scored over the query's candidate pool;
                                                                an uncaptioned clip's caption side ranks below every caption

each side's share also scaled by its confidence in this query (its peak z; fusion.py's "query-adaptive").

The fused value is shown on the model score's scale (pool mean + spread · fused z), so score bars and
the weak-match cut-off keep their meaning; at w = 0 it is the model score itself.

Fusion re-ranks the union of both stores' top candidates (a pool a few pages deep), so deep pages
of a hybrid query are approximate. Paging asks Chroma for offset + k results and slices.

A store error mid-query (another process rebuilding the index, say) raises index.IndexBusy, whose
message tells people to try again, rather than Chroma's internal words.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from core.store import audio

from core.pipeline import fusion, index
from core.models import zero_shot
from core.models.embedder import Embedder
from core.models.zero_shot import DEFAULT_TEMPLATES
from core.store.workspace import Workspace

DEFAULT_SCALE = 100.0              # CLIP's logit scale; used when the model carries no temperature
HYBRID_POOL = 50                   # candidates per store before fusion (grows with the page asked for)


@dataclass
class Filters:
    """Metadata filters; empty means no filter. Tags match when the clip has any of them."""
    status: Sequence[str] = ()
    source: Sequence[str] = ()
    tags: Sequence[str] = ()
    min_duration: float | None = None
    max_duration: float | None = None
    recording_id: int | None = None
    window_start: float | None = None       # clips overlapping [window_start, window_end) of their recording
    window_end: float | None = None
    meta: dict = field(default_factory=dict)   # recording metadata columns, exact match (e.g. label)

    def where(self) -> dict | None:
        conds: list[dict] = []
        if self.status:
            conds.append({"status": {"$in": list(self.status)}})
        if self.source:
            conds.append({"source": {"$in": list(self.source)}})
        tags = [t.strip().lower() for t in self.tags if t and t.strip()]
        if tags:
            ors = [{"tags": {"$contains": t}} for t in tags]
            conds.append(ors[0] if len(ors) == 1 else {"$or": ors})
        if self.min_duration is not None:
            conds.append({"duration": {"$gte": float(self.min_duration)}})
        if self.max_duration is not None:
            conds.append({"duration": {"$lte": float(self.max_duration)}})
        if self.recording_id is not None:
            conds.append({"recording_id": int(self.recording_id)})
        if self.window_start is not None:
            conds.append({"end": {"$gt": float(self.window_start)}})
        if self.window_end is not None:
            conds.append({"start": {"$lt": float(self.window_end)}})
        for key, value in self.meta.items():
            conds.append({f"meta_{key}": value})
        if not conds:
            return None
        return conds[0] if len(conds) == 1 else {"$and": conds}


@dataclass
class Hit:
    clip_id: int
    recording_id: int
    name: str
    start: float
    end: float
    score: float                         # what the ranking used
    model_score: float                   # cosine between query and clip in the model's space
    caption_score: float | None = None   # cosine between query text and the clip's caption (MiniLM)
    caption: str = ""
    tags: list[str] = field(default_factory=list)
    status: str = "pending"
    source: str = ""
    meta: dict = field(default_factory=dict)
    audio_key: str = ""                  # the index's content key of the clip's audio (recording hash + window)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class SearchPage:
    hits: list[Hit]
    offset: int
    k: int
    has_more: bool
    model_id: str
    seconds: float = 0.0
    notice: str = ""                     # e.g. clips not yet indexed

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "offset": self.offset, "k": self.k, "has_more": self.has_more,
                "seconds": round(self.seconds, 4), "notice": self.notice,
                "hits": [{**{k: v for k, v in h.__dict__.items() if k != "audio_key"},
                          "duration": round(h.duration, 3)} for h in self.hits]}


def _hit(meta: dict, model_score: float, caption_score: float | None = None, score: float | None = None) -> Hit:
    meta = meta or {}
    score = model_score if score is None else score
    return Hit(clip_id=int(meta.get("clip_id", -1)), recording_id=int(meta.get("recording_id", -1)),
               name=str(meta.get("name", "")), start=float(meta.get("start", 0.0)), end=float(meta.get("end", 0.0)),
               score=float(score), model_score=float(model_score),
               caption_score=None if caption_score is None else float(caption_score),
               caption=str(meta.get("caption", "")), tags=list(meta.get("tags") or []),
               status=str(meta.get("status", "pending")), source=str(meta.get("source", "")),
               meta={k[5:]: v for k, v in meta.items() if k.startswith("meta_")},
               audio_key=str(meta.get("audio_key", "")))


def player_wav(ws: Workspace, hit: Hit) -> Path:
    """The WAV a result's player plays (Workspace.clip_wav_path). Once made, it is found by the hit's
    content key without reading the catalogue (ten results, twenty queries saved per page); the
    key holds the recording's hash, so the file found is always this clip's audio."""
    if hit.audio_key:
        cached = ws.cache_dir / "clips" / f"{hit.audio_key.replace(':', '_')}.wav"
        if cached.is_file():
            return cached
    return ws.clip_wav_path(hit.clip_id)


def _nearest(col, vector: np.ndarray, n: int, where: dict | None) -> tuple[list[str], list[float], list[dict]]:
    """Chroma's top n: (ids, cosine similarities, metadatas)."""
    if n <= 0:
        return [], [], []
    got = col.query(query_embeddings=np.asarray(vector, np.float32)[None, :], n_results=n, where=where,
                    include=["metadatas", "distances"])
    ids, dist, metas = got["ids"][0], got["distances"][0], got["metadatas"][0]
    return list(ids), [1.0 - float(d) for d in dist], list(metas)


def _vectors(col, ids: Sequence[str]) -> dict[str, np.ndarray]:
    if not ids:
        return {}
    got = col.get(ids=list(ids), include=["embeddings"])
    return {rid: np.asarray(v, np.float32) for rid, v in zip(got["ids"], got["embeddings"])}


def _caption_scores(ws: Workspace, ids: Sequence[str], query_vec: np.ndarray | None) -> dict[str, float]:
    if query_vec is None or not ids:
        return {}
    vecs = _vectors(index.captions_collection(ws), ids)
    return {rid: float(v @ query_vec) for rid, v in vecs.items()}


def _rank(ws: Workspace, embedder: Embedder, vector: np.ndarray, *, k: int, offset: int, filters: Filters | None,
          caption_query: np.ndarray | None, hybrid_weight: float, exclude: int | None,
          with_caption_scores: bool) -> SearchPage:
    started = time.perf_counter()
    col = index.open_collection(ws, embedder)
    where = (filters or Filters()).where()
    extra = 1 if exclude is not None else 0
    want = offset + k + 1 + extra                      # one more than the page tells whether a next page exists
    weight = float(hybrid_weight) if caption_query is not None else 0.0
    if weight <= 0:
        ids, scores, metas = _nearest(col, vector, want, where)
        rows = [(i, s, m) for i, s, m in zip(ids, scores, metas) if exclude is None or i != str(exclude)]
        page = rows[offset:offset + k]
        caps = _caption_scores(ws, [i for i, _, _ in page], caption_query) if with_caption_scores else {}
        hits = [_hit(m, s, caps.get(i)) for i, s, m in page]
        has_more = len(rows) > offset + k
    else:
        pool = max(HYBRID_POOL, want)
        ids, scores, metas = _nearest(col, vector, pool, where)
        model = {i: (s, m) for i, s, m in zip(ids, scores, metas)}
        cap_ids, _, _ = _nearest(index.captions_collection(ws), caption_query, pool, None)
        extra_ids = [i for i in cap_ids if i not in model]
        if extra_ids:                                  # caption-side candidates: apply the filters, score them
            got = col.get(ids=extra_ids, where=where, include=["embeddings", "metadatas"])
            for rid, vec, meta in zip(got["ids"], got["embeddings"], got["metadatas"]):
                model[rid] = (float(np.asarray(vec, np.float32) @ vector), meta)
        caps = _caption_scores(ws, list(model), caption_query)
        rows = [(i, s, m) for i, (s, m) in model.items() if exclude is None or i != str(exclude)]
        audio_s = np.array([s for _, s, _ in rows], np.float64)
        caption_s = np.array([caps.get(i, np.nan) for i, _, _ in rows], np.float64)   # NaN: no caption
        shown = fusion.in_units_of(fusion.fuse(audio_s, caption_s, weight), audio_s)
        fused = sorted(((i, float(f), s, m) for (i, s, m), f in zip(rows, shown)), key=lambda r: -r[1])
        hits = [_hit(m, s, caps.get(i), f) for i, f, s, m in fused[offset:offset + k]]
        has_more = len(fused) > offset + k
    return SearchPage(hits, offset, k, has_more, embedder.model_id, time.perf_counter() - started)


_query_vectors: OrderedDict[tuple, np.ndarray] = OrderedDict()
_query_lock = threading.Lock()
QUERY_CACHE = 256                  # paging and repeated queries skip the text encoder


class _Slot:
    def __init__(self, text: str):
        self.text, self.vector, self.error, self.done = text, None, None, False


class _TextBatcher:
    """Concurrent queries share encoder calls: while one call runs, the texts that arrive meanwhile
    wait and then go through the next call together. The encoder (MiniLM) runs one call at a time
    anyway, and 8 short texts cost little more than one, so under load this multiplies throughput;
    a lone query goes straight through."""

    def __init__(self, embed_text):
        self.embed_text = embed_text
        self.cond = threading.Condition()
        self.queue: list[_Slot] = []
        self.busy = False

    def __call__(self, text: str) -> np.ndarray:
        slot = _Slot(text)
        with self.cond:
            self.queue.append(slot)
            while self.busy and not slot.done:
                self.cond.wait()
            if not slot.done:                  # nobody is encoding: encode everything queued, ours included
                self.busy = True
                batch, self.queue = self.queue, []
        if not slot.done:
            self._encode(batch)
        if slot.error is not None:
            raise slot.error
        return slot.vector

    def _encode(self, batch: list[_Slot]) -> None:
        try:
            vectors = np.asarray(self.embed_text([s.text for s in batch]), np.float32)
            for s, v in zip(batch, vectors):
                s.vector = v
        except Exception as exc:  # noqa: BLE001 - every query of the batch gets the error
            for s in batch:
                s.error = exc
        finally:
            with self.cond:
                for s in batch:
                    s.done = True
                self.busy = False
                self.cond.notify_all()


_batchers: dict[tuple, _TextBatcher] = {}


def _batcher(embedder, key: tuple) -> _TextBatcher:
    with _query_lock:
        if key not in _batchers:
            _batchers[key] = _TextBatcher(embedder.embed_text)
        return _batchers[key]


def embed_query_text(embedder, text: str) -> np.ndarray:
    """The embedder's vector for a query text, remembered for the last QUERY_CACHE queries."""
    model = (embedder.model_id, index.checksum_of(embedder))
    key = (*model, text)
    with _query_lock:
        if key in _query_vectors:
            _query_vectors.move_to_end(key)
            return _query_vectors[key]
    vector = _batcher(embedder, model)(text)
    with _query_lock:
        _query_vectors[key] = vector
        while len(_query_vectors) > QUERY_CACHE:
            _query_vectors.popitem(last=False)
    return vector


def clear_query_cache() -> None:
    with _query_lock:
        _query_vectors.clear()
        _batchers.clear()


class _CaptionEncoder:
    """MiniLM (the caption space) behind the same cache as the models."""
    model_id = index.CAPTIONS_MODEL
    checksum = "minilm-l6-v2"

    @staticmethod
    def embed_text(texts):
        from core.models import text_encoder
        return text_encoder.encode(list(texts))


@index.store_errors
def search_text(ws: Workspace, embedder: Embedder, query: str, *, k: int = 10, offset: int = 0,
                filters: Filters | None = None, hybrid_weight: float = 0.0,
                with_caption_scores: bool = False) -> SearchPage:
    """Clips that sound like `query`. With hybrid_weight > 0 the caption similarity joins the score."""
    if not query or not query.strip():
        raise ValueError("type something to search for")
    vector = embed_query_text(embedder, query.strip())
    caption_query = None
    if (hybrid_weight > 0 or with_caption_scores) and index.captions_collection(ws).count():
        caption_query = embed_query_text(_CaptionEncoder, query.strip())
    return _rank(ws, embedder, vector, k=k, offset=offset, filters=filters, caption_query=caption_query,
                 hybrid_weight=hybrid_weight, exclude=None, with_caption_scores=with_caption_scores)


@index.store_errors
def search_vector(ws: Workspace, embedder: Embedder, vector: np.ndarray, *, k: int = 10, offset: int = 0,
                  filters: Filters | None = None) -> SearchPage:
    """Clips nearest to a vector already in the model's space (e.g. a point picked on the map)."""
    vector = np.asarray(vector, np.float32).ravel()
    return _rank(ws, embedder, vector / (np.linalg.norm(vector) or 1.0), k=k, offset=offset, filters=filters,
                 caption_query=None, hybrid_weight=0.0, exclude=None, with_caption_scores=False)


def embed_query_audio(ws: Workspace, embedder: Embedder, source: str | Path | bytes | np.ndarray) -> np.ndarray:
    """One query vector for an audio file (or 16 kHz wave): long audio is windowed and averaged."""
    wave = source if isinstance(source, np.ndarray) else audio.decode(source)[0]
    wave = np.asarray(wave, np.float32)
    seconds = len(wave) / audio.SAMPLE_RATE
    s = ws.settings
    if seconds > s.window_seconds:
        waves = [wave[int(w.start * audio.SAMPLE_RATE):int(w.end * audio.SAMPLE_RATE)]
                 for w in audio.windows(seconds, s.window_seconds, s.overlap_seconds)]
    else:
        waves = [wave]
    vectors = np.asarray(embedder.embed_audio(waves), np.float32)
    mean = vectors.mean(axis=0)
    return mean / (np.linalg.norm(mean) or 1.0)


@index.store_errors
def search_audio(ws: Workspace, embedder: Embedder, source: str | Path | bytes | np.ndarray, *, k: int = 10,
                 offset: int = 0, filters: Filters | None = None) -> SearchPage:
    """Clips that sound like the given audio (a file, bytes, or a 16 kHz wave)."""
    vector = embed_query_audio(ws, embedder, source)
    return _rank(ws, embedder, vector, k=k, offset=offset, filters=filters, caption_query=None,
                 hybrid_weight=0.0, exclude=None, with_caption_scores=False)


@index.store_errors
def more_like_this(ws: Workspace, embedder: Embedder, clip_id: int, *, k: int = 10, offset: int = 0,
                   filters: Filters | None = None, hybrid_weight: float = 0.0,
                   with_caption_scores: bool = False) -> SearchPage:
    """Clips nearest to an indexed clip (itself left out); hybrid compares captions with its caption."""
    ids, vectors = index.get_embeddings(ws, embedder, [int(clip_id)])
    if not ids:
        raise KeyError(f"no clip {clip_id}")
    caption_query = None
    if hybrid_weight > 0 or with_caption_scores:
        caption_query = _vectors(index.captions_collection(ws), [str(clip_id)]).get(str(clip_id))
    return _rank(ws, embedder, vectors[0], k=k, offset=offset, filters=filters, caption_query=caption_query,
                 hybrid_weight=hybrid_weight, exclude=int(clip_id), with_caption_scores=with_caption_scores)


# -- zero-shot classification ---------------------------------------------------------------------------
@dataclass
class ZeroShot:
    labels: list[str]
    probs: list[float]                   # softmax(scale · similarity), in the labels' order
    similarities: list[float]
    scale: float
    templates: list[str]

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(zip(self.labels, self.probs), key=lambda p: -p[1])

    def to_dict(self) -> dict:
        return {"labels": self.labels, "probs": self.probs, "similarities": self.similarities,
                "scale": self.scale, "templates": self.templates, "top": self.ranked()[0][0] if self.labels else None}


def parse_labels(text: str | Sequence[str]) -> list[str]:
    """'dog, cat\\nrain' → ['dog', 'cat', 'rain'] (order kept, blanks and repeats dropped)."""
    items = text.replace("\n", ",").split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return out


def parse_templates(text: str | Sequence[str] | None) -> list[str]:
    """One template per line; '{label}' (or '{}') marks where the label goes."""
    if not text:
        return list(DEFAULT_TEMPLATES)
    lines = text.splitlines() if isinstance(text, str) else list(text)
    out = [t.strip() for t in lines if t.strip()]
    return out or list(DEFAULT_TEMPLATES)


def model_scale(embedder: Embedder) -> float | None:
    """The model's own softmax scale: exp(`logit_scale`) as in CLIP (log-space, capped at 100),
    or 1 / `temperature`; None when the model has neither."""
    log_scale = getattr(embedder, "logit_scale", None)
    if log_scale is not None:
        log_scale = log_scale.detach() if hasattr(log_scale, "detach") else log_scale   # a torch Parameter
        return float(min(np.exp(float(log_scale)), DEFAULT_SCALE))
    temperature = getattr(embedder, "temperature", None)
    if temperature:
        return 1.0 / float(temperature)
    return None


@index.store_errors
def classify(ws: Workspace, embedder: Embedder, labels: str | Sequence[str], *, clip_id: int | None = None,
             source: str | Path | bytes | np.ndarray | None = None, templates: str | Sequence[str] | None = None,
             scale: float | None = None) -> ZeroShot:
    """Probabilities of each label for one clip (by id) or one piece of audio (file, bytes, wave)."""
    labels = parse_labels(labels)
    if len(labels) < 2:
        raise ValueError("give at least two labels, separated by commas")
    templates = parse_templates(templates)
    if clip_id is not None:
        ids, vectors = index.get_embeddings(ws, embedder, [int(clip_id)])
        if not ids:
            raise KeyError(f"no clip {clip_id}")
        vector = vectors[0]
    elif source is not None:
        vector = embed_query_audio(ws, embedder, source)
    else:
        raise ValueError("choose a clip or give audio to classify")
    sims = zero_shot.classifier(embedder, labels, templates) @ vector
    scale = float(scale or model_scale(embedder) or DEFAULT_SCALE)
    logits = scale * sims
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return ZeroShot(labels, [float(p) for p in probs], [float(s) for s in sims], scale, templates)


def facets(ws: Workspace, max_tags: int = 200) -> dict:
    """Values the filter widgets offer: sources, and the most frequent tags of published captions
    (everyone may see them, visitors included)."""
    from collections import Counter
    counts: Counter = Counter()
    for caption in ws.catalog.published_captions().values():
        counts.update(index.top_tags(caption.tags))
    return {"sources": ws.catalog.sources(), "tags": [t for t, _ in counts.most_common(max_tags)]}
