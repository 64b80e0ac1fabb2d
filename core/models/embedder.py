"""The one surface search, map and evaluation need from any audio-text model."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    model_id: str        # stable id; names the Chroma collection
    dim: int

    def embed_audio(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """16 kHz mono float32 waves → [N, dim] float32, L2-normalised."""

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts → [N, dim] float32, L2-normalised, in the same space as the audio."""
