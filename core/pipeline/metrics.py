"""Retrieval and zero-shot metrics on similarity matrices (numpy only; no model code).

Ties are broken pessimistically (a tied wrong item ranks ahead), so a constant
model never looks good.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _ranks_of_first_hit(sim: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """For each query row: 0-based rank of its best relevant item (inf when none)."""
    sim = np.asarray(sim, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    best = np.where(relevant, sim, -np.inf).max(axis=1)                 # best relevant score per query
    ahead = (np.where(~relevant, sim, -np.inf) >= best[:, None]).sum(axis=1)   # wrong items tied or above
    return np.where(relevant.any(axis=1), ahead, np.inf)


def recall_at_k(sim: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Share of queries with at least one relevant item in the top k."""
    ranks = _ranks_of_first_hit(sim, relevant)
    return {k: float(np.mean(ranks < k)) if len(ranks) else 0.0 for k in ks}


def map_at_k(sim: np.ndarray, relevant: np.ndarray, k: int = 10) -> float:
    """Mean average precision over the top k, normalised by min(k, number relevant)."""
    sim = np.asarray(sim, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if sim.size == 0:
        return 0.0
    # stable pessimistic order: among equal scores, irrelevant items come first
    order = np.lexsort((relevant, -sim), axis=1)[:, :k]
    hits = np.take_along_axis(relevant, order, axis=1)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    denom = np.minimum(relevant.sum(axis=1), k)
    ap = np.where(denom > 0, (precision * hits).sum(axis=1) / np.maximum(denom, 1), 0.0)
    return float(ap.mean())


def zero_shot_accuracy(audio_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int]) -> float:
    """Share of clips whose nearest class embedding (cosine; rows L2-normalised) is their label."""
    if len(labels) == 0:
        return 0.0
    pred = np.argmax(np.asarray(audio_emb) @ np.asarray(class_emb).T, axis=1)
    return float(np.mean(pred == np.asarray(labels)))


def confusion_matrix(pred: Sequence[int], labels: Sequence[int], n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(labels, dtype=int), np.asarray(pred, dtype=int)), 1)
    return m


def retrieval_report(audio_emb: np.ndarray, text_emb: np.ndarray, relevant: np.ndarray,
                     ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Text→audio and audio→text R@k plus text→audio mAP@10.

    `relevant[i, j]` says text query i matches clip j (a caption its own clip; a label
    prompt every clip of that label).
    """
    sim = np.asarray(text_emb) @ np.asarray(audio_emb).T              # [texts, clips]
    t2a = recall_at_k(sim, relevant, ks)
    a2t = recall_at_k(sim.T, relevant.T, ks)
    out = {f"t2a_r{k}": v for k, v in t2a.items()}
    out.update({f"a2t_r{k}": v for k, v in a2t.items()})
    out["map10"] = map_at_k(sim, relevant, 10)
    return out


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each true class (row of the confusion matrix); NaN for a class with no clips."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / totals, np.nan)


def zero_shot_predictions(audio_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Nearest class per clip, ties broken pessimistically: a true class tied with another counts as the other.

    So a constant model scores 0 instead of the share of whichever class comes first.
    """
    sim = np.asarray(audio_emb, dtype=np.float64) @ np.asarray(class_emb, dtype=np.float64).T
    return zero_shot_from_scores(sim, labels)


def zero_shot_from_scores(sim: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """zero_shot_predictions from a [clips, classes] score matrix (e.g. fused scores, core/pipeline/fusion.py)."""
    sim = np.asarray(sim, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if sim.shape[0] == 0 or sim.shape[1] < 2:
        return labels.copy()          # one class: nothing to confuse it with
    rows = np.arange(sim.shape[0])
    true_score = sim[rows, labels]
    rivals = sim.copy()
    rivals[rows, labels] = -np.inf
    best_rival = rivals.argmax(axis=1)
    tied_or_beaten = rivals[rows, best_rival] >= true_score
    return np.where(tied_or_beaten, best_rival, labels)
