"""A combined student (`--student combine:<audio encoder>+<text model>`): a pretrained audio encoder and a
sentence-transformers text model joined by trained projections (issue 17).

    audio ─▶ encoder (wav2vec2 / HuBERT / AST / Whisper's encoder, from transformers) ─▶ mean over time
          ─▶ LayerNorm + linear ─▶ L2                          (trained; the encoder's top layers optionally)
    text  ─▶ sentence-transformers model (`minilm` = the packaged MiniLM) ─▶ linear (identity at first) ─▶ L2

A checkpoint folder: `config.json` (`"kind": "combine"`, model_id, the `hearsay` block), `model.safetensors`
(projections + temperature), `audio/` (the encoder and its feature extractor, Hugging Face format),
`text/` (the sentence-transformers model), `README.md`. Nothing is downloaded: a missing model raises
core.models.registry.ModelUnavailable naming what to fetch.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.models.clap_student import locate
from core.models.embedder import ModelUnavailable
from core.models.pretrained import (CONFIG_NAME, PROCESSOR_NAME, WEIGHT_FILES, WEIGHTS_NAME, PretrainedStudent,
                                    card_sections, crop_waves, file_digest, merge_adapters, quiet_transformers,
                                    state_digest)

KIND = "combine"
MINILM = "minilm"                          # the packaged sentence encoder (core.models.text_encoder)
EXAMPLE = "facebook/wav2vec2-base"
MAX_SECONDS = 10.0


def parse(ident: str) -> tuple[str, str]:
    """`<audio>+<text>` (text defaults to the packaged MiniLM) → (audio source, text source)."""
    audio_src, plus, text_src = ident.rpartition("+") if "+" in ident else (ident, "", MINILM)
    if not audio_src.strip():
        raise ValueError(f"combine:{ident}: name an audio encoder, e.g. combine:{EXAMPLE}+{MINILM}")
    return audio_src.strip(), (text_src.strip() or MINILM)


def locate_audio(source: str, ws=None) -> str:
    return locate(source, ws, what="audio encoder", example=EXAMPLE, use="combine:{}+minilm")


def locate_text(source: str) -> str:
    if source == MINILM:
        from core.models.text_encoder import minilm_path
        return minilm_path()
    return locate(source, what="sentence-transformers", example="sentence-transformers/all-MiniLM-L6-v2",
                  needs=("modules.json",), weights=(), use="combine:<audio>+{}")


class CombineStudent(PretrainedStudent):
    """core.models.embedder.Embedder over an audio encoder + a sentence-transformers model (module docstring)."""

    KIND = KIND
    audio_batch = 16

    def __init__(self, encoder, features, text_model, meta: dict | None = None):
        super().__init__()
        self.encoder, self.features, self.text_model = encoder, features, text_model
        self.meta = {"name": "hearsay-combine", "max_seconds": MAX_SECONDS, **(meta or {})}
        hidden = int(getattr(encoder.config, "hidden_size", None) or encoder.config.d_model)
        dimension = getattr(text_model, "get_embedding_dimension", None) or text_model.get_sentence_embedding_dimension
        text_dim = int(dimension())
        dim = int(self.meta.setdefault("dim", text_dim))
        self.audio_proj = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))
        self.text_proj = nn.Linear(text_dim, dim)
        with torch.no_grad():                     # the text side starts as the sentence model itself
            self.text_proj.weight.copy_(torch.eye(dim, text_dim))
            self.text_proj.bias.zero_()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.frozen: list[nn.Module] = []
        self.source = ""

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_sources(cls, audio_src: str, text_src: str = MINILM, ws=None, device="cpu") -> "CombineStudent":
        """A fresh student: pretrained encoder and text model, new projections."""
        audio_src, text_src = str(audio_src), str(text_src)
        where_audio, where_text = locate_audio(audio_src, ws), locate_text(text_src)
        encoder, features = _load_encoder(where_audio)
        student = cls(encoder, features, _load_text(where_text),
                      {"audio_model": audio_src, "text_model": text_src, "base_model": f"{audio_src}+{text_src}"})
        return student.to(device).eval()

    @classmethod
    def load(cls, folder: str | Path, device="cpu") -> "CombineStudent":
        """A saved checkpoint folder (see the module docstring)."""
        from safetensors.torch import load_file
        folder = Path(folder)
        needed = [folder / CONFIG_NAME, folder / WEIGHTS_NAME, folder / "audio" / CONFIG_NAME, folder / "text" / "modules.json"]
        if not all(p.is_file() for p in needed):
            raise ModelUnavailable(f"the folder {folder} is not a complete combined student (it needs "
                                   f"{', '.join(str(p.relative_to(folder)) for p in needed)}); train one with "
                                   f"`python -m training train --student combine:<audio>+<text>`")
        config = json.loads((folder / CONFIG_NAME).read_text())
        encoder, features = _load_encoder(str(folder / "audio"))
        student = cls(encoder, features, _load_text(str(folder / "text")), {**config.get("hearsay", {}),
                                                                             "model_id": config.get("model_id", "")})
        head = load_file(str(folder / WEIGHTS_NAME))
        missing, unexpected = student.load_state_dict(head, strict=False)
        missing = [k for k in missing if not k.startswith(("encoder.", "text_model."))]
        if missing or unexpected:
            raise ValueError(f"{folder} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        student.source = str(folder)
        return student.to(device).eval()

    # -- identity ------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.meta.get("model_id") or f"combine:{self.meta.get('base_model', '')}"

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def digest(self) -> str:
        if not self.meta.get("digest"):
            self.meta["digest"] = state_digest(self)
        return self.meta["digest"]

    # -- inputs --------------------------------------------------------------------------------------
    @property
    def whisper(self) -> bool:
        return getattr(self.encoder.config, "model_type", "") == "whisper"

    def audio_inputs(self, waves: Sequence[np.ndarray], rng: np.random.Generator | None = None) -> dict:
        return audio_inputs(self.features, waves, float(self.meta["max_seconds"]), self.whisper, rng)

    def text_inputs(self, texts: Sequence[str]) -> dict:
        return text_inputs(self.text_model, texts)

    # -- forward -------------------------------------------------------------------------------------
    def forward_audio(self, **inputs) -> torch.Tensor:
        mask = inputs.get("attention_mask")
        hidden = self.encoder(**inputs).last_hidden_state                        # [B, T, H]
        if mask is not None and hasattr(self.encoder, "_get_feat_extract_output_lengths"):
            lengths = self.encoder._get_feat_extract_output_lengths(mask.sum(-1))  # samples → frames
            valid = (torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths[:, None]).to(hidden.dtype)
            pooled = (hidden * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)
        else:
            pooled = hidden.mean(1)
        return F.normalize(self.audio_proj(pooled.float()), dim=-1)

    def forward_text(self, **tokens) -> torch.Tensor:
        base = self.text_model(tokens)["sentence_embedding"]
        return F.normalize(self.text_proj(base.float()), dim=-1)

    def forward(self, audio: dict, text: dict):
        """(audio [B, dim], text [B, dim], logit_scale), as the shared losses expect."""
        return self.forward_audio(**audio), self.forward_text(**text), self.logit_scale

    # -- checkpoints ---------------------------------------------------------------------------------
    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith(("encoder.", "text_model."))}

    def _write_weights(self, tmp: Path) -> dict:
        """Head, audio/ and text/ (PretrainedStudent.save writes config.json and the card)."""
        from safetensors.torch import save_file
        plain = merge_adapters(self)                     # LoRA (peft) merged: the folder needs no peft
        save_file(plain.head_state(), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        plain.encoder.save_pretrained(tmp / "audio")
        self.features.save_pretrained(tmp / "audio")
        plain.text_model.save(str(tmp / "text"))
        h = hashlib.sha256()
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            f.chmod(0o644)
            h.update(str(f.relative_to(tmp)).encode() + file_digest(f).encode())
        self.meta["digest"] = h.hexdigest()
        return {"architecture": "hearsay-combine", "audio_model_type": getattr(self.encoder.config, "model_type", "")}

    def _card(self, info: dict) -> str:
        return model_card(self, info)


def _load_encoder(where: str):
    """(encoder, feature extractor): AutoModel, and only the encoder of an encoder-decoder (Whisper)."""
    quiet_transformers()
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=True)
        features = AutoFeatureExtractor.from_pretrained(where, local_files_only=True)
        if config.model_type == "whisper":
            from transformers.models.whisper.modeling_whisper import WhisperEncoder
            if getattr(config, "architectures", None) and "WhisperEncoder" in config.architectures:
                encoder = WhisperEncoder.from_pretrained(where, local_files_only=True)
            else:
                encoder = AutoModel.from_pretrained(where, local_files_only=True).get_encoder()
        else:
            encoder = AutoModel.from_pretrained(where, local_files_only=True)
    except OSError as exc:
        raise ModelUnavailable(f"the audio encoder in {where} could not be read ({exc}); it needs "
                               f"{CONFIG_NAME}, {PROCESSOR_NAME} and {' or '.join(WEIGHT_FILES)}") from None
    return encoder, features


def _load_text(where: str):
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(where, device="cpu", local_files_only=True)


def audio_inputs(features, waves: Sequence[np.ndarray], max_seconds: float = MAX_SECONDS, whisper: bool = False,
                 rng: np.random.Generator | None = None) -> dict:
    """16 kHz waves → the encoder's inputs (`input_values` + attention mask, or `input_features`).
    Clips longer than `max_seconds`: a centre window (a random one with `rng`)."""
    sr = int(features.sampling_rate)
    limit = int(max_seconds * sr)
    ready = crop_waves(waves, sr, limit, rng)
    kwargs = {} if whisper else {"padding": True, "return_attention_mask": True}
    out = features(ready, sampling_rate=sr, return_tensors="pt", **kwargs)
    names = ("input_features",) if whisper else ("input_values", "input_features", "attention_mask")
    return {k: out[k] for k in names if k in out}


def text_inputs(text_model, texts: Sequence[str]) -> dict:
    tokenize = getattr(text_model, "preprocess", None) or text_model.tokenize      # renamed in sentence-transformers 5
    return {k: v for k, v in tokenize(list(texts)).items() if torch.is_tensor(v)}


def model_card(student: CombineStudent, info: dict) -> str:
    m = student.meta
    lines = ["---", "library_name: hearsay", "tags: [audio, text, contrastive, audio-retrieval, hearsay]",
             f"license: {info.get('license', 'apache-2.0')}", "---", "", f"# {student.model_id}", "",
             "A Hearsay combined student: a pretrained audio encoder and a sentence-transformers text model "
             "joined by projections trained on a workspace's teacher captions and reviews.", "",
             "## Architecture",
             f"- Audio: `{m.get('audio_model')}` ({getattr(student.encoder.config, 'model_type', '?')}, "
             f"{sum(p.numel() for p in student.encoder.parameters()):,} parameters; in `audio/`) → mean over time "
             f"→ LayerNorm + linear → L2-normalised {student.dim}-d vector.",
             f"- Text: `{m.get('text_model')}` (sentence-transformers; in `text/`) → linear → L2-normalised.", ""]
    lines += card_sections(info, (("Training data", "data"), ("Training", "training"), ("Evaluation", "metrics")))
    lines += ["## Use", "```python", "from core.models.combine_student import CombineStudent",
              "model = CombineStudent.load('path/to/folder')",
              "audio = model.embed_audio([wave_16k]); text = model.embed_text(['a dog barking'])", "```", ""]
    return "\n".join(lines)
