"""What the students built on pretrained Hugging Face models (clap_student, combine_student) share:
checkpoint file names, quiet loading, digests, clip cropping, the model card's sections, and the
Embedder surface / atomic save of `PretrainedStudent`.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from core.models.student import write_card_and_extras
from core.store import audio
from core.store.files import atomic_dir

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
WEIGHT_FILES = (WEIGHTS_NAME, "pytorch_model.bin")
PROCESSOR_NAME = "preprocessor_config.json"


def quiet_transformers() -> None:
    from transformers.utils import logging
    logging.disable_progress_bar()       # "Loading weights" bars in every CLI run and test log
    logging.set_verbosity_error()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def crop_waves(waves: Sequence[np.ndarray], sr: int, limit: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """16 kHz waves resampled to `sr`; longer than `limit` samples: a centre window (a random one with `rng`)."""
    ready = []
    for w in waves:
        w = audio.resample(np.asarray(w, np.float32), audio.SAMPLE_RATE, sr)
        if len(w) > limit:
            start = int(rng.integers(0, len(w) - limit + 1)) if rng is not None else (len(w) - limit) // 2
            w = w[start:start + limit]
        ready.append(w)
    return ready


def card_sections(info: dict, sections: Sequence[tuple[str, str]]) -> list[str]:
    """Model-card lines: one `## title` section per (title, key) whose value in `info` is set."""
    lines = []
    for title, key in sections:
        value = info.get(key)
        if value:
            lines += [f"## {title}"] + ([f"- {k}: {v}" for k, v in value.items()] if isinstance(value, dict)
                                        else [str(value)]) + [""]
    return lines


def merge_adapters(module: nn.Module) -> nn.Module:
    """`module` itself, or when training injected LoRA adapters (peft, `--lora-rank`) a copy with each
    adapter merged into the layer it adapts: what a checkpoint saves, so loading one needs no peft."""
    if not _adapted_layers(module):
        return module
    merged = copy.deepcopy(module)
    for name, layer in _adapted_layers(merged):
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(merged.get_submodule(parent), child, layer.get_base_layer())
    merged.__dict__.pop("peft_config", None)
    return merged


def _adapted_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """peft's tuner layers (duck-typed: finding none needs no peft installed)."""
    return [(name, m) for name, m in module.named_modules() if hasattr(m, "get_base_layer") and hasattr(m, "merge")]


class PretrainedStudent(nn.Module):
    """The Embedder surface and checkpoint save shared by ClapStudent and CombineStudent. A subclass
    sets `meta` (with "name"), `frozen`, `source`, `dim`, `device`, `audio_inputs`, `text_inputs`,
    `forward_audio`, `forward_text`, `_write_weights(tmp) -> config` and `_card(info) -> str`."""

    audio_batch = 32                     # embed_audio's default batch size

    def train(self, mode: bool = True) -> "PretrainedStudent":
        super().train(mode)
        for m in self.frozen:            # frozen parts keep their normalisation statistics and skip dropout
            m.eval()
        return self

    @property
    def name(self) -> str:
        return self.meta["name"]

    @name.setter
    def name(self, value: str) -> None:
        self.meta["name"] = value

    # -- Embedder ------------------------------------------------------------------------------------
    def _autocast(self):
        return contextlib.nullcontext()

    @torch.no_grad()
    def embed_audio(self, waves: Sequence[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """16 kHz mono float32 waves → [N, dim] float32, L2-normalised."""
        return self._embed(waves, batch_size or self.audio_batch, lambda part: self.forward_audio(
            **{k: v.to(self.device) for k, v in self.audio_inputs(part).items() if v is not None}))

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Texts → [N, dim] float32, L2-normalised, in the audio's space."""
        return self._embed(list(texts), batch_size, lambda part: self.forward_text(
            **{k: v.to(self.device) for k, v in self.text_inputs(part).items()}))

    def _embed(self, items, batch_size: int, run) -> np.ndarray:
        out = []
        was_training = self.training
        self.eval()
        try:
            with self._autocast():
                for i in range(0, len(items), batch_size):
                    v = run(items[i:i + batch_size]).float()
                    out.append(torch.nn.functional.normalize(v, dim=-1).cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    # -- checkpoints ---------------------------------------------------------------------------------
    def save(self, folder: str | Path, card: dict | None = None, extra: dict | None = None) -> Path:
        """Write the folder atomically (same contract as core.models.student.Student.save): the
        subclass's weights, then config.json with `kind`, model_id and the `hearsay` block, the card."""
        quiet_transformers()
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            config = self._write_weights(tmp)           # sets meta["digest"]
            self.meta["model_id"] = f"{self.name}-{self.meta['digest'][:10]}"
            config.update({"kind": self.KIND, "model_id": self.model_id,
                           "hearsay": {k: v for k, v in self.meta.items() if k != "model_id"}})
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
            write_card_and_extras(tmp, self._card(card or {}), extra)
        self.source = str(folder)
        return folder
