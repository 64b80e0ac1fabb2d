"""The one surface search, map and evaluation need from any audio-text model, and the one error
for a model that cannot be had here (raised by the registry and the students, re-exported by the registry)."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


class ModelUnavailable(KeyError, RuntimeError):
    """No loadable model by that name on this machine; the message says what is missing and where to put it.

    A KeyError (a name the catalogue does not know) and a RuntimeError (weights not on this machine), so
    callers written against either keep working; str() is the plain message (KeyError's would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@runtime_checkable
class Embedder(Protocol):
    model_id: str        # stable id; names the Chroma collection
    dim: int

    def embed_audio(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """16 kHz mono float32 waves → [N, dim] float32, L2-normalised."""

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts → [N, dim] float32, L2-normalised, in the same space as the audio."""
