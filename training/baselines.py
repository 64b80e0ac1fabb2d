"""Reference models to compare a student with, each behind the `Embedder` surface.

- `TeacherCaptionEmbedder` ("teacher"): caption the clip with the embedded teacher, then embed
  the caption with MiniLM; texts are embedded with the same MiniLM. What search would be
  without a student.
- `ClapEmbedder` ("clap"): LAION CLAP through transformers' `ClapModel` (core.models.clap_student), only
  when its weights are already on disk (never downloaded).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from core.store import audio


class TeacherCaptionEmbedder:
    """audio → MiniLM(teacher caption), text → MiniLM(text): a 384-d shared space with no training."""

    dim = 384

    def __init__(self, teacher: str = "embedded", device: str | None = None, cache_path: str | Path | None = None):
        from core.models.teachers import get_teacher
        self.teacher = get_teacher(teacher)
        self.model_id = f"teacher-{self.teacher.name}-minilm"
        self.device = device or "cpu"
        self.cache_path = Path(cache_path) if cache_path else None
        self._captions: dict[str, str] = {}       # content hash → caption; captioning is the slow part
        self._lock = threading.Lock()
        self.failures = 0
        if self.cache_path and self.cache_path.is_file():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._captions[entry["key"]] = entry["caption"]
                except (ValueError, KeyError):
                    continue                          # a torn last line after a crash

    def _key(self, wave: np.ndarray) -> str:
        return self.teacher.cache_key(audio.content_hash(wave))

    def captions(self, waves: Sequence[np.ndarray]) -> list[str]:
        keys = [self._key(w) for w in waves]
        todo = [i for i, k in enumerate(keys) if k not in self._captions]
        if todo:
            outs = self.teacher.caption_each([waves[i] for i in todo])
            fresh = {}
            for i, out in zip(todo, outs):
                if isinstance(out, Exception):
                    self.failures += 1                # an empty caption ranks last instead of stopping the run
                    continue
                fresh[keys[i]] = out.caption
            with self._lock:
                self._captions.update(fresh)
                if self.cache_path and fresh:
                    self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                    with self.cache_path.open("a", encoding="utf-8") as fh:
                        for k, c in fresh.items():
                            fh.write(json.dumps({"key": k, "caption": c}, ensure_ascii=False) + "\n")
        return [self._captions.get(k, "") for k in keys]

    def embed_audio(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_text(self.captions(waves))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        from core.models.text_encoder import encode
        return encode(list(texts), device=self.device)


def ClapEmbedder(source: str | None = None, device: str | None = None):
    """LAION CLAP (a hub id in the local cache, or any CLAP folder) as a baseline: the untrained
    core.models.clap_student.ClapStudent, never downloaded (ModelUnavailable says what to fetch)."""
    from core.models.clap_student import DEFAULT_REPO, ClapStudent
    from core.store.settings import resolve_device
    source = source or os.environ.get("HEARSAY_CLAP_PATH") or DEFAULT_REPO
    return ClapStudent.from_pretrained(source, device=resolve_device(device or "auto"))
