"""Reference models to compare a student with, each behind the `Embedder` surface.

- `TeacherCaptionEmbedder` ("teacher"): caption the clip with the embedded teacher, then embed
  the caption with MiniLM; texts are embedded with the same MiniLM. What search would be
  without a student.
- `ClapEmbedder` ("clap"): LAION CLAP through transformers' `ClapModel`, only when its weights
  are already on disk (never downloaded).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from core import audio


class TeacherCaptionEmbedder:
    """audio → MiniLM(teacher caption), text → MiniLM(text): a 384-d shared space with no training."""

    dim = 384

    def __init__(self, teacher: str = "embedded", device: str | None = None, cache_path: str | Path | None = None):
        from core.teachers import get_teacher
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
        from core.text_encoder import encode
        return encode(list(texts), device=self.device)


CLAP_REPO = "laion/clap-htsat-unfused"
CLAP_SAMPLE_RATE = 48_000


class ModelUnavailable(RuntimeError):
    """The model's weights are not on this machine; the message says how to get them."""


def _clap_on_disk(source: str) -> bool:
    if Path(source).expanduser().is_dir():
        return (Path(source).expanduser() / "config.json").is_file()
    from huggingface_hub import try_to_load_from_cache
    try:
        return isinstance(try_to_load_from_cache(source, "config.json"), str)
    except ValueError:            # a path that is not there is not a repo id either
        return False


def _clap_missing(source: str) -> str:
    return (f"CLAP weights {source!r} are not on this machine (Hearsay never downloads models). "
            f"On a machine with network run `hf download {CLAP_REPO}` and copy the Hugging Face cache "
            "here, or point HEARSAY_CLAP_PATH at a folder holding the model.")


class ClapEmbedder:
    """LAION CLAP (HTSAT, unfused) from the local Hugging Face cache or a folder; never downloads."""

    def __init__(self, source: str | None = None, device: str | None = None):
        source = source or os.environ.get("HEARSAY_CLAP_PATH") or CLAP_REPO
        if not _clap_on_disk(source):       # answer before importing torch and transformers (seconds)
            raise ModelUnavailable(_clap_missing(source))
        try:
            import torch  # noqa: F401
            from transformers import ClapFeatureExtractor, ClapModel, AutoTokenizer
            self.model = ClapModel.from_pretrained(source, local_files_only=True).eval()
            self.features = ClapFeatureExtractor.from_pretrained(source, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except OSError as exc:
            raise ModelUnavailable(_clap_missing(source)) from exc
        from core.settings import resolve_device
        self.device = resolve_device(device or "auto")
        self.model.to(self.device)
        self.model_id = f"clap:{Path(source).name if Path(source).exists() else source}"
        self.dim = int(self.model.config.projection_dim)

    def embed_audio(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        import torch
        limit = int(self.features.nb_max_samples)
        waves48 = []
        for w in waves:
            w = audio.resample(np.asarray(w, np.float32), audio.SAMPLE_RATE, CLAP_SAMPLE_RATE)
            start = max(0, (len(w) - limit) // 2)
            waves48.append(w[start:start + limit])     # centre crop: the extractor would crop at random
        fused = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
        inputs = self.features(waves48, sampling_rate=CLAP_SAMPLE_RATE, return_tensors="pt",
                               truncation="fusion" if fused else "rand_trunc", padding="repeatpad")
        with torch.inference_mode():
            out = self.model.get_audio_features(**{k: v.to(self.device) for k, v in inputs.items()})
        return out.pooler_output.float().cpu().numpy()

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        inputs = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()})
        return out.pooler_output.float().cpu().numpy()
