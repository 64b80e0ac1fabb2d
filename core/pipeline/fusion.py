"""Late fusion of two score sources: the model's audio score and the caption's text score.

    fused = (1 - w) · z(audio_scores) + w · z(caption_scores)        z: per query (per row)

Why z-scores: the two sides live on different scales. A student's cosines spread over a few
hundredths while MiniLM caption cosines spread over tenths (and either can shift with a retrained
model), so a raw weighted sum lets whichever side is wider decide on its own and the weight means
nothing stable. Standardising each side over the candidates of one query (a row: one text query
over clips, or one clip over class prompts) makes the weight a plain share of the vote, and
z-scoring is monotone, so w = 0 ranks exactly by audio and w = 1 exactly by caption.

A missing score (NaN: a clip without a published caption, a caption the teacher failed on) earns no
caption credit: it sits one standard deviation below the row's worst present score (z = min − 1),
so on the caption side every captioned clip outranks it, yet the penalty is bounded and a strong
audio score can still carry it. The row's mean and spread come from the present scores only.

Query-adaptive (the default): each side's share in a row is also scaled by how confident that side
is there — its peak, the row's largest z (how far its best candidate stands above the rest):

    fused = ((1 - w)·pa·z(audio) + w·pc·z(caption)) / ((1 - w)·pa + w·pc)     pa, pc: the peaks

A caption that quotes a spoken digit singles one class out (a high peak) where an audio model that never
heard digits spreads its scores evenly (a low peak), and the reverse for a vague caption; a row with no
caption at all (constant, peak 0) is ranked by audio alone. This is the score-curve-shape idea of
query-adaptive late fusion (Zheng et al., CVPR 2015) in its simplest form; it has no parameter to tune,
w = 0 and w = 1 stay exactly audio and exactly caption order. Against the fixed mix on leave-one-set-out
(two seeds) it gains 2–5 points on spoken digits, a little on kitchen sounds, is level on instruments
and one or two clips behind on booth sounds (README "Late fusion"). `adaptive=False` gives the fixed mix.

Search (core/pipeline/search.py) and evaluation (`python -m training evaluate --fusion W`) both call `fuse`,
so a weight measured by the benchmark means the same thing in the app.
"""
from __future__ import annotations

import numpy as np


def zscore(scores, axis: int = -1) -> np.ndarray:
    """Standardise along `axis` (each query's candidates); NaN → the row's lowest z − 1; a constant row → 0."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.copy()
    present = np.isfinite(s)
    count = present.sum(axis=axis, keepdims=True)
    filled = np.where(present, s, 0.0)
    mean = filled.sum(axis=axis, keepdims=True) / np.maximum(count, 1)
    var = np.where(present, (s - mean) ** 2, 0.0).sum(axis=axis, keepdims=True) / np.maximum(count, 1)
    std = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(std > 1e-12, (filled - mean) / std, 0.0)
    z = np.where(present, z, np.inf)
    floor = np.min(z, axis=axis, keepdims=True)
    floor = np.where(np.isfinite(floor), floor - 1.0, 0.0)        # a row with nothing present stays 0
    return np.where(present, z, floor)


def peak(z, axis: int = -1) -> np.ndarray:
    """A side's confidence in each row: its largest z-score (0 for a constant row), kept as a column."""
    return np.maximum(np.max(z, axis=axis, keepdims=True), 0.0) if np.size(z) else np.zeros_like(z)


def fuse(audio_scores, caption_scores, weight: float, axis: int = -1, adaptive: bool = True) -> np.ndarray:
    """The caption side's share `weight` (0..1) of z(audio) and z(caption), z-scored per row along
    `axis`, each side's share scaled by its peak in that row (`adaptive`, the module docstring) or
    not: (1 - weight) · z(audio) + weight · z(caption).

    Both arrays have the same shape (1-D: one query; 2-D: one query per row). Returns z units:
    compare within a row only."""
    w = float(weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"fusion weight must be between 0 and 1, not {weight}")
    a, c = np.asarray(audio_scores, dtype=np.float64), np.asarray(caption_scores, dtype=np.float64)
    if a.shape != c.shape:
        raise ValueError(f"score shapes differ: {a.shape} vs {c.shape}")
    za, zc = zscore(a, axis), zscore(c, axis)
    if w in (0.0, 1.0):
        return za if w == 0.0 else zc
    if not adaptive:
        return (1.0 - w) * za + w * zc
    pa, pc = (1.0 - w) * peak(za, axis), w * peak(zc, axis)
    total = pa + pc
    with np.errstate(invalid="ignore", divide="ignore"):       # both sides flat: nothing to rank by
        share = np.where(total > 0, pc / np.where(total > 0, total, 1.0), w)
    return (1.0 - share) * za + share * zc


def in_units_of(fused, reference, axis: int = -1) -> np.ndarray:
    """Fused z-scores mapped back onto `reference`'s scale (its row mean and spread), so a display
    that reads scores as similarities (score bars, 'weak match' cut-offs) still reads them sensibly;
    monotone, and at weight 0 it gives back the reference scores themselves."""
    ref = np.asarray(reference, dtype=np.float64)
    mean = np.nanmean(ref, axis=axis, keepdims=True) if ref.size else ref
    std = np.nanstd(ref, axis=axis, keepdims=True) if ref.size else ref
    return mean + std * np.asarray(fused, dtype=np.float64)
