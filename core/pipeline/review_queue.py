"""The review queue: which clip comes next (import order, teacher confidence, student/teacher
disagreement, seeded shuffle), and whether a clip still waits for this annotator.
"""
from __future__ import annotations

import random
import threading
from typing import Callable, Sequence

import numpy as np

from core.pipeline.review_overlap import overlap
from core.store.catalog import DECIDED, Catalog, Review

ORDERS = {
    "pending": "Pending first (import order)",
    "low-confidence": "Lowest teacher confidence first",
    "high-confidence": "Highest teacher confidence first",
    "disagreement": "Student/teacher disagreement first",
    "random": "Random (seeded)",
}
SCOPES = {"todo": "Still to review (pending, then skipped)", "all": "All clips (pending first)"}


def build_queue(catalog: Catalog, order: str = "pending", *, scope: str = "todo", seed: int = 0,
                annotator: str | None = None, scores: dict[int, float] | None = None) -> list[int]:
    """Clip ids in review order: pending first, then skipped, then (scope "all") decided ones.

    Within each group: import order, teacher confidence (clips without one last), student/teacher
    agreement `scores` (lowest first: see `disagreement_scores`), or a seeded shuffle.
    In overlap review, "todo" means clips this annotator has not decided that still need people.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
    if order == "disagreement" and scores is None:
        raise ValueError("the disagreement order needs scores from a student model (disagreement_scores)")
    reviews = catalog.reviews()
    group = {"pending": 0, "skipped": 1}
    need = overlap(catalog)
    if need > 1 and annotator:
        decided = {cid: {who for who, a in people.items() if a.status in DECIDED}
                   for cid, people in catalog.current_annotations().items()}
        mine_skipped = {cid for cid, people in catalog.current_annotations().items()
                        if people.get(annotator) and people[annotator].status == "skipped"}

        def rank(cid: int, review: Review) -> int:
            if review.status != "pending" or annotator in decided.get(cid, set()):
                return 2
            if len(decided.get(cid, ())) >= need:
                return 2          # enough people judged it; waits for a lead
            return 1 if cid in mine_skipped else 0
    else:
        def rank(cid: int, review: Review) -> int:
            return group.get(review.status, 2)

    ranked = {cid: rank(cid, r) for cid, r in reviews.items()}
    ids = [cid for cid in reviews if scope == "all" or ranked[cid] < 2]
    if order == "random":
        shuffled = list(ids)
        random.Random(seed).shuffle(shuffled)
        position = {cid: i for i, cid in enumerate(shuffled)}
        return sorted(ids, key=lambda cid: (ranked[cid], position[cid]))
    if order == "disagreement":
        return sorted(ids, key=lambda cid: (ranked[cid], cid not in scores, scores.get(cid, 0.0), cid))
    if order in ("low-confidence", "high-confidence"):
        sign = 1.0 if order == "low-confidence" else -1.0
        conf = {cid: c.confidence for cid, c in catalog.current_captions(ids).items()}
        return sorted(ids, key=lambda cid: (ranked[cid], conf.get(cid) is None,
                                            sign * (conf.get(cid) or 0.0), cid))
    return sorted(ids, key=lambda cid: (ranked[cid], cid))


def still_todo(catalog: Catalog, clip_id: int, annotator: str | None = None) -> bool:
    """Whether the clip still waits for this annotator (a colleague may have decided it meanwhile)."""
    review = catalog.get_review(clip_id)
    if review.status not in ("pending", "skipped"):
        return False
    if overlap(catalog) > 1 and annotator:
        mine = catalog.current_annotations().get(clip_id, {}).get(annotator)
        return mine is None or mine.status not in DECIDED
    return True


def disagreement_scores(ws, clip_ids: Sequence[int], embedder, *, batch_size: int = 32,
                        progress: Callable[[int, int], None] | None = None,
                        cancel: threading.Event | None = None, use_index: bool = True) -> dict[int, float]:
    """Cosine between the student's audio embedding and its text embedding of the current caption.

    Low means the student hears something other than what the teacher wrote: review those first.
    `embedder` is any `core.models.embedder.Embedder`; clips without a caption get no score. Audio vectors
    come from the search index when there is one (clips it lacks get indexed, so search gains too).
    """
    captions = ws.catalog.current_captions(clip_ids)
    ids = [cid for cid in clip_ids if cid in captions]
    audio = _indexed_audio(ws, ids, embedder, progress, cancel) if use_index else {}
    scores: dict[int, float] = {}
    for start in range(0, len(ids), batch_size):
        if cancel is not None and cancel.is_set():
            break
        batch = ids[start:start + batch_size]
        missing = [cid for cid in batch if cid not in audio]
        if missing:
            audio.update(zip(missing, np.asarray(embedder.embed_audio([ws.load_clip(c) for c in missing]),
                                                 dtype=np.float32)))
        text = np.asarray(embedder.embed_text([captions[cid].text for cid in batch]), dtype=np.float32)
        for cid, t in zip(batch, text):
            scores[cid] = float(np.dot(audio[cid], t))
        if progress:
            progress(min(start + batch_size, len(ids)), len(ids))
    return scores


def _indexed_audio(ws, ids: Sequence[int], embedder, progress, cancel) -> dict[int, np.ndarray]:
    """Audio vectors read back from the Chroma index; {} when the index is not reachable."""
    from core.pipeline import index     # lazy: Chroma is heavy to import
    try:
        index.sync(ws, embedder, clip_ids=list(ids), captions=False, cancel=cancel,
                   progress=(lambda done, total, _: progress(done, total)) if progress else None)
        got, matrix = index.get_embeddings(ws, embedder, list(ids))
    except index.IndexUnavailable:
        return {}
    return dict(zip(got, matrix))
