"""Overlap review: how many people judge each clip, when their decisions settle it (consensus),
and how well they agree (Fleiss/Cohen kappa on accept-vs-reject, similarity of kept captions).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from core.store.catalog import ACCEPTING, DECIDED, Catalog, ConflictError, Review

OVERLAP_KEY = "review.overlap"
CONSENSUS = "consensus"          # the annotator name recorded when n overlapping decisions agree


def overlap(catalog: Catalog) -> int:
    """How many people must judge each clip (1 = plain review)."""
    try:
        return max(1, int(catalog.get_value(OVERLAP_KEY) or 1))
    except ValueError:
        return 1


def set_overlap(catalog: Catalog, n: int) -> int:
    if not 1 <= int(n) <= 10:
        raise ValueError("overlap must be between 1 and 10 people per clip")
    catalog.set_value(OVERLAP_KEY, str(int(n)))
    return int(n)



def _same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).strip(" .") == " ".join(b.lower().split()).strip(" .")


def try_consensus(catalog: Catalog, clip_id: int, need: int) -> Review:
    """Settle the clip when `need` people decided and all agree (same verdict, same caption)."""
    review = catalog.get_review(clip_id)
    if review.status != "pending":
        return review
    decided = [a for a in catalog.current_annotations().get(clip_id, {}).values() if a.status in DECIDED]
    if len(decided) < need:
        return review
    if all(a.status == "rejected" for a in decided):
        reasons = "; ".join(sorted({a.reason for a in decided if a.reason}))
        status, caption_id = "rejected", decided[0].caption_id
    elif all(a.status in ACCEPTING for a in decided):
        texts = [catalog.get_caption(a.caption_id).text if a.caption_id else "" for a in decided]
        if not all(_same_text(texts[0], t) for t in texts):
            return review
        caption = catalog.get_caption(decided[0].caption_id)
        status, caption_id, reasons = ("edited" if caption.origin == "annotator" else "accepted"), caption.id, ""
    else:
        return review
    try:
        return catalog.save_review(clip_id, status=status, expected_version=review.version, annotator=CONSENSUS,
                                   caption_id=caption_id, reason=reasons or None, action=CONSENSUS)
    except ConflictError as exc:      # a lead settled it meanwhile; their save stands
        return exc.current


@dataclass
class Disagreement:
    clip_id: int
    decisions: dict[str, dict]             # person → {status, caption, reason}
    similarity: float | None               # lowest caption similarity among people who accepted
    review: Review


@dataclass
class Agreement:
    items: int                             # clips judged by two people or more
    annotators: list[str]
    fleiss_kappa: float | None
    cohen_kappa: dict[str, tuple[float | None, int]]   # "a / b" → (kappa, shared clips)
    caption_similarity: float | None       # mean pairwise cosine (MiniLM) of captions people accepted
    disagreements: list[Disagreement]


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa from an [items, categories] matrix of rater counts (raters per item may vary)."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts.sum(axis=1) >= 2]
    if len(counts) == 0:
        return None
    n = counts.sum(axis=1)
    p_item = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / n.sum()
    expected = float((p_cat ** 2).sum())
    if expected >= 1.0:
        return None               # everyone used one category: agreement is undefined
    return float((p_item.mean() - expected) / (1.0 - expected))


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    if len(a) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score
    if len(set(a) | set(b)) < 2:
        return None
    value = cohen_kappa_score(list(a), list(b))
    return None if np.isnan(value) else float(value)


def agreement(catalog: Catalog, *, encode: Callable[[Sequence[str]], np.ndarray] | None = None,
              similarity_threshold: float = 0.8) -> Agreement:
    """Agreement over clips that two or more people decided (accept/edit = accept, reject = reject).

    A clip is a disagreement when verdicts differ, or when people accepted captions whose
    MiniLM cosine falls below `similarity_threshold`.
    """
    if encode is None:
        from core.models.text_encoder import encode
    current = catalog.current_annotations()
    judged = {cid: {who: a for who, a in people.items() if a.status in DECIDED}
              for cid, people in current.items()}
    judged = {cid: people for cid, people in judged.items() if len(people) >= 2}
    annotators = sorted({who for people in judged.values() for who in people})
    texts = {}
    for people in judged.values():
        for a in people.values():
            if a.caption_id is not None and a.caption_id not in texts:
                texts[a.caption_id] = catalog.get_caption(a.caption_id).text
    vectors = {}
    if texts:
        ids = list(texts)
        vectors = dict(zip(ids, encode([texts[i] for i in ids])))

    counts, sims_all, disagreements = [], [], []
    for cid, people in judged.items():
        verdicts = [int(a.status in ACCEPTING) for a in people.values()]
        counts.append([len(verdicts) - sum(verdicts), sum(verdicts)])
        kept = [a.caption_id for a in people.values() if a.status in ACCEPTING and a.caption_id in vectors]
        pair_sims = [float(np.dot(vectors[x], vectors[y])) for x, y in itertools.combinations(kept, 2)]
        sims_all += pair_sims
        low = min(pair_sims) if pair_sims else None
        if len(set(verdicts)) > 1 or (low is not None and low < similarity_threshold):
            disagreements.append(Disagreement(
                cid, {who: {"status": a.status, "caption": texts.get(a.caption_id, ""), "reason": a.reason or ""}
                      for who, a in people.items()}, low, catalog.get_review(cid)))
    cohen = {}
    for x, y in itertools.combinations(annotators, 2):
        shared = [cid for cid, people in judged.items() if x in people and y in people]
        a = [int(judged[c][x].status in ACCEPTING) for c in shared]
        b = [int(judged[c][y].status in ACCEPTING) for c in shared]
        cohen[f"{x} / {y}"] = (cohen_kappa(a, b), len(shared))
    return Agreement(len(judged), annotators, fleiss_kappa(np.array(counts)) if counts else None, cohen,
                     float(np.mean(sims_all)) if sims_all else None, disagreements)
