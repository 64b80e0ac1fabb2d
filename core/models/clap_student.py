"""A CLAP student: transformers' `ClapModel` behind the Embedder surface (issue 17, `--student clap:ID`).

Where the embedded student trains a few MB on top of a frozen tagger, this one fine-tunes a whole
pretrained audio-text model (laion/clap-htsat-unfused, laion/larger_clap_general, ...) on the
workspace's captions; it wants a GPU.

A checkpoint is a plain Hugging Face folder that `ClapModel.from_pretrained` also reads:
`config.json` (ClapConfig + `"kind": "clap"`, `model_id` and a `hearsay` block), `model.safetensors`,
the processor files (`preprocessor_config.json`, tokenizer files) and `README.md`. `core.models.registry`
dispatches on the `kind` marker. Weights come from a folder or the local Hugging Face cache only:
nothing is downloaded; a missing model raises `ModelUnavailable` saying what to fetch and where.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from core.models.embedder import ModelUnavailable   # re-exported: the one "model missing" error
from core.models.pretrained import (CARD_NAME, CONFIG_NAME, PROCESSOR_NAME, WEIGHT_FILES,  # noqa: F401 - re-exported
                                     WEIGHTS_NAME, PretrainedStudent, card_sections, crop_waves, file_digest,
                                     merge_adapters, quiet_transformers, state_digest)

KIND = "clap"
DEFAULT_REPO = "laion/clap-htsat-unfused"
MAX_TEXT_TOKENS = 77


# -- finding the weights ------------------------------------------------------------------------------
def _hub_cache() -> str:
    from huggingface_hub import constants
    return str(constants.HF_HUB_CACHE)


def missing_message(source: str, folder: Path | None = None, *, what: str = "CLAP", example: str = DEFAULT_REPO,
                    needs: Sequence[str] = (CONFIG_NAME, WEIGHTS_NAME, PROCESSOR_NAME), use: str = "clap:{}") -> str:
    repo = source if folder is None else example
    where = (f"the folder {folder} has no {what} weights (it needs {', '.join(needs)})" if folder is not None else
             f"the {what} weights {source!r} are not in the local Hugging Face cache ({_hub_cache()})")
    return (f"{where}; Hearsay never downloads models. On a machine with network run "
            f"`hf download {repo}` and copy its cache folder models--{repo.replace('/', '--')} into "
            f"{_hub_cache()}, or run `hf download {repo} --local-dir /path/to/model` and use "
            f"`{use.format('/path/to/model')}`.")


def locate(source: str, ws=None, *, what: str = "CLAP", example: str = DEFAULT_REPO,
           needs: Sequence[str] = (CONFIG_NAME, PROCESSOR_NAME), weights: Sequence[str] = WEIGHT_FILES,
           use: str = "clap:{}") -> str:
    """A folder path or a cached hub id that `from_pretrained(..., local_files_only=True)` will load.

    `source`: a folder, a workspace model id (a run registered before) or a hub repo id. The folder
    (or cached repo) must hold every file in `needs` and one of `weights`; else ModelUnavailable."""
    source = str(source or example).strip()
    folder = Path(source).expanduser()
    words = dict(what=what, example=example, needs=[*needs, " or ".join(weights)], use=use)
    if ws is not None and not folder.exists():
        try:
            folder = Path(ws.catalog.get_model(source).path)
        except (KeyError, LookupError):
            pass
    if folder.is_dir():
        if all((folder / n).is_file() for n in needs) and (not weights or any((folder / w).is_file() for w in weights)):
            return str(folder.resolve())
        raise ModelUnavailable(missing_message(source, folder.resolve(), **words))
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise ModelUnavailable(f"no {what} weights at {source!r}: no such folder, and not a hub id like "
                               f"{example!r}; " + missing_message(example, **words))
    from huggingface_hub import try_to_load_from_cache
    try:
        have = [isinstance(try_to_load_from_cache(source, n), str) for n in needs]
        have_weights = [isinstance(try_to_load_from_cache(source, w), str) for w in weights]
    except ValueError:
        have, have_weights = [False], [False]
    if not all(have) or (weights and not any(have_weights)):
        raise ModelUnavailable(missing_message(source, **words))
    return source


_quiet_transformers = quiet_transformers      # the name scripts and configs import


# -- the model ----------------------------------------------------------------------------------------
class ClapStudent(PretrainedStudent):
    """core.models.embedder.Embedder over a `ClapModel` plus its feature extractor and tokenizer.

    `forward` is one training step's embeddings (audio, text, logit_scale), so Accelerate / DDP can
    wrap the module; `embed_audio` / `embed_text` take 16 kHz waves and plain texts."""

    KIND = KIND

    def __init__(self, model, features, tokenizer, meta: dict | None = None):
        super().__init__()
        self.model = model
        self.features = features
        self.tokenizer = tokenizer
        self.meta = dict(meta or {})
        self.meta.setdefault("name", "hearsay-clap")
        self.source = ""                 # the folder or hub id the weights came from
        self.frozen: list[nn.Module] = []  # parts training leaves alone (train_clap.freeze_layers)
        from transformers.audio_utils import window_function
        # the extractor's non-fusion log-mel, in torch on the model's device (its numpy version takes
        # ~170 ms per 10 s clip on a CPU core: a GPU would wait for it)
        self.register_buffer("mel_window", torch.tensor(window_function(features.fft_window_size, "hann"),
                                                        dtype=torch.float32), persistent=False)
        self.register_buffer("mel_filters", torch.tensor(np.asarray(features.mel_filters_slaney).T,
                                                         dtype=torch.float32), persistent=False)
        pad = int(getattr(model.config.text_config, "pad_token_id", 1) or 0)
        self.max_tokens = min(MAX_TEXT_TOKENS, int(model.config.text_config.max_position_embeddings) - pad - 1)

    # -- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source: str | Path = DEFAULT_REPO, ws=None, device: str | torch.device = "cpu") -> "ClapStudent":
        """A folder (a Hearsay CLAP checkpoint or any CLAP folder), a workspace model id or a cached hub id."""
        where = locate(source, ws)
        _quiet_transformers()
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel
        try:
            model = ClapModel.from_pretrained(where, local_files_only=True)
            features = ClapFeatureExtractor.from_pretrained(where, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
        except OSError as exc:           # a file the checks above did not cover (tokenizer, shards)
            raise ModelUnavailable(f"{missing_message(source, Path(where) if Path(where).is_dir() else None)} "
                                   f"({exc})") from None
        saved = json.loads((Path(where) / CONFIG_NAME).read_text()) if Path(where).is_dir() else {}
        meta = {**saved.get("hearsay", {}), "model_id": saved.get("model_id", "")}
        meta.setdefault("base_model", str(source))
        student = cls(model, features, tokenizer, meta)
        student.source = where
        return student.to(device).eval()

    load = from_pretrained          # core.models.registry: ClapStudent.load(folder, device=...)

    # -- identity ------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.meta.get("model_id") or f"clap:{self.meta.get('base_model', DEFAULT_REPO)}"   # a base model

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale_a.device

    @property
    def logit_scale(self) -> nn.Parameter:
        """The one temperature the shared losses use (CLAP keeps two; the audio one is trained)."""
        return self.model.logit_scale_a

    def digest(self) -> str:
        """Weights digest (the index's checksum): stored at save, else hashed from the loaded file."""
        if not self.meta.get("digest"):
            files = [Path(getattr(self, "source", "")) / w for w in WEIGHT_FILES]
            found = next((f for f in files if f.is_file()), None)
            if found is None and not Path(getattr(self, "source", "")).is_dir():
                from huggingface_hub import try_to_load_from_cache
                cached = [try_to_load_from_cache(self.source, w) for w in WEIGHT_FILES]
                found = next((Path(c) for c in cached if isinstance(c, str)), None)
            self.meta["digest"] = file_digest(found) if found else state_digest(self.model)
        return self.meta["digest"]

    # -- inputs --------------------------------------------------------------------------------------
    @property
    def fused(self) -> bool:
        return bool(getattr(self.model.config.audio_config, "enable_fusion", False))

    def audio_inputs(self, waves: Sequence[np.ndarray], rng: np.random.Generator | None = None) -> dict:
        return audio_inputs(self.features, waves, self.fused, rng)

    def text_inputs(self, texts: Sequence[str]) -> dict:
        return text_inputs(self.tokenizer, texts, self.max_tokens)

    # -- forward -------------------------------------------------------------------------------------
    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, L] waves at the extractor's rate → [B, 1, T, mels]: ClapFeatureExtractor's non-fusion
        features (power STFT, slaney mel, dB), in float32 whatever the autocast."""
        with torch.autocast(waveform.device.type, enabled=False):
            spec = torch.stft(waveform.float(), n_fft=int(self.features.fft_window_size),
                              hop_length=int(self.features.hop_length), window=self.mel_window, center=True,
                              pad_mode="reflect", return_complex=True)
            mel = torch.matmul(self.mel_filters, spec.real ** 2 + spec.imag ** 2)       # [B, mels, T]
            return (10.0 * torch.log10(mel.clamp_min(1e-10))).transpose(1, 2).unsqueeze(1)

    def forward_audio(self, waveform: torch.Tensor | None = None, input_features: torch.Tensor | None = None,
                      is_longer: torch.Tensor | None = None) -> torch.Tensor:
        """`audio_inputs`' tensors → [B, dim] L2-normalised audio embeddings."""
        if waveform is not None:
            input_features = self.log_mel(waveform)
        return self.model.get_audio_features(input_features=input_features, is_longer=is_longer).pooler_output

    def forward_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def forward(self, input_ids, attention_mask, waveform=None, input_features=None, is_longer=None):
        """(audio [B, dim], text [B, dim], logit_scale): both L2-normalised, as the losses expect."""
        return (self.forward_audio(waveform, input_features, is_longer), self.forward_text(input_ids, attention_mask),
                self.logit_scale)

    # -- Embedder ------------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        return super()._autocast()

    # -- checkpoints ---------------------------------------------------------------------------------
    def plain_model(self):
        """The ClapModel to save: LoRA adapters (peft) merged into a copy, so the folder needs no peft."""
        return merge_adapters(self.model)

    def _write_weights(self, tmp: Path) -> dict:
        """The Hugging Face folder (PretrainedStudent.save adds Hearsay's block to its config.json)."""
        self.plain_model().save_pretrained(tmp)
        self.features.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            f.chmod(0o644)                # safetensors writes 0600; checkpoints are shared files
        self.meta["digest"] = file_digest(tmp / WEIGHTS_NAME)
        return json.loads((tmp / CONFIG_NAME).read_text())

    def _card(self, info: dict) -> str:
        return model_card(self, info)


def audio_inputs(features, waves: Sequence[np.ndarray], fused: bool = False,
                 rng: np.random.Generator | None = None) -> dict:
    """16 kHz waves → the model's audio inputs: `waveform` [B, L] at the extractor's rate (non-fusion
    models), else the extractor's own tensors. Long clips: a centre window (a random one with `rng`)."""
    sr, limit = int(features.sampling_rate), int(features.nb_max_samples)
    ready = crop_waves(waves, sr, limit, rng)
    if not fused:      # the waves themselves, as the extractor pads them; ClapStudent.log_mel does the rest
        return {"waveform": torch.from_numpy(np.stack([_repeat_pad(w, limit) for w in ready]))}
    out = features(ready, sampling_rate=sr, return_tensors="pt", truncation="fusion", padding="repeatpad")
    return {"input_features": out["input_features"], "is_longer": out.get("is_longer")}


def _repeat_pad(w: np.ndarray, length: int) -> np.ndarray:
    """ClapFeatureExtractor's "repeatpad": repeat a short wave whole as often as it fits, then zeros."""
    if len(w) < length:
        w = np.tile(w, max(1, length // max(1, len(w))))
        w = np.pad(w, (0, length - len(w)))
    return np.ascontiguousarray(w, dtype=np.float32)


def text_inputs(tokenizer, texts: Sequence[str], max_tokens: int = MAX_TEXT_TOKENS) -> dict:
    out = tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


def model_card(student: ClapStudent, info: dict) -> str:
    """A short model card: base model, sizes, what it learned from, how it scores."""
    cfg = student.model.config
    params = sum(p.numel() for p in student.plain_model().parameters())
    lines = ["---", "library_name: transformers", "pipeline_tag: zero-shot-audio-classification",
             "tags: [audio, text, clap, contrastive, audio-retrieval, hearsay]",
             f"base_model: {student.meta.get('base_model', DEFAULT_REPO)}",
             f"license: {info.get('license', 'apache-2.0')}", "---", "",
             f"# {student.model_id}", "",
             "A CLAP model fine-tuned by Hearsay on a workspace's teacher captions and reviews, for "
             "text-to-sound search and zero-shot tagging.", "",
             "## Architecture",
             f"- `ClapModel` (transformers), {params:,} parameters; audio: HTSAT "
             f"(depths {list(cfg.audio_config.depths)}, {cfg.audio_config.num_mel_bins} mel bins at "
             f"{student.features.sampling_rate} Hz, {student.features.max_length_s} s windows); text: RoBERTa "
             f"({cfg.text_config.num_hidden_layers} layers); shared {cfg.projection_dim}-d space.",
             f"- Base model: `{student.meta.get('base_model', DEFAULT_REPO)}`.", ""]
    lines += card_sections(info, (("Training data", "data"), ("Training", "training"), ("Evaluation", "metrics"),
                                  ("Limitations", "limitations")))
    lines += ["## Use", "```python", "from transformers import ClapModel, ClapProcessor",
              "model = ClapModel.from_pretrained('path/to/folder')      # any transformers user",
              "from core.models.clap_student import ClapStudent                 # or inside Hearsay (16 kHz waves)",
              "student = ClapStudent.load('path/to/folder')",
              "audio = student.embed_audio([wave_16k]); text = student.embed_text(['a dog barking'])", "```", ""]
    return "\n".join(lines)

