"""Audio LLM teachers through transformers: Qwen2-Audio-Instruct and Qwen2.5-Omni (thinker only, text out).

    teacher = TransformersTeacher(settings)                       # settings.transformers_model
    teacher.caption([wave16k, ...])                               # batched greedy generation

Options (constructor keywords, or `extra` settings `transformers_dtype`, `transformers_device_map`,
`transformers_max_new_tokens`, `transformers_batch_size`): dtype ("auto", "bfloat16", "float16",
"float32"), device_map ("auto" needs accelerate; None puts the model on settings.device), a cap on new
tokens, and the batch size. The prompt is editable; a caption records the model id and the prompt.

Weights load with `local_files_only` unless HF_HUB_OFFLINE is off, so nothing is downloaded by
surprise. Tests pass a tiny randomly initialised model and a processor built in memory (`model=`,
`processor=`), exercising the same prompt assembly, batching and decoding.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from core.store.settings import Settings, load_settings
from core.models.gpu import gpu
from core.models.teachers.base import SAMPLE_RATE, Teacher, TeacherOutput

DEFAULT_PROMPT = ("Describe this sound in one short sentence for a sound-search index: what makes the sound, "
                  "what happens over time, and the setting. If someone speaks, quote the words.")
OMNI_SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
               "auditory and visual inputs, as well as generating text and speech.")


class TransformersTeacher(Teacher):
    name = "transformers"

    def __init__(self, settings: Settings | None = None, prompt: str | None = None, *, model_id: str | None = None,
                 dtype: str | None = None, device_map: str | None = None, max_new_tokens: int | None = None,
                 batch_size: int | None = None, model=None, processor=None, system: str | None = None):
        self.settings = settings or load_settings()
        extra = self.settings.extra
        self.model_id = model_id or (getattr(getattr(model, "config", None), "_name_or_path", "") if model else "") \
            or self.settings.transformers_model
        self.prompt = prompt or DEFAULT_PROMPT
        self.dtype = dtype or extra.get("transformers_dtype", "auto")
        self.device_map = device_map if device_map is not None else extra.get("transformers_device_map", "auto")
        self.max_new_tokens = int(max_new_tokens or extra.get("transformers_max_new_tokens", 64))
        self.batch_size = int(batch_size or extra.get("transformers_batch_size", 4))
        self._model, self._processor = model, processor
        self._system = system
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    @property
    def processor(self):
        if self._processor is None:
            self._load()
        return self._processor

    def _load(self) -> None:
        import torch
        from transformers import AutoConfig, AutoProcessor

        offline = os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False")
        config = AutoConfig.from_pretrained(self.model_id, local_files_only=offline)
        cls = model_class(config.model_type)
        device = self.settings.resolved_device()
        kwargs = {"local_files_only": offline}
        kwargs["dtype"] = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        if self.device_map and self.device_map != "none" and device != "cpu":
            kwargs["device_map"] = self.device_map
        model = cls.from_pretrained(self.model_id, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(device)
        self._model = model.eval()
        self._processor = AutoProcessor.from_pretrained(self.model_id, local_files_only=offline)

    @property
    def is_omni(self) -> bool:
        return "omni" in str(getattr(self.model.config, "model_type", "")).lower()

    # -- prompting -----------------------------------------------------------------------------
    def conversation(self) -> list[dict]:
        """The chat for one clip: optional system turn, then the audio and the prompt."""
        system = self._system if self._system is not None else (OMNI_SYSTEM if self.is_omni else None)
        turns = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        turns.append({"role": "user", "content": [{"type": "audio", "audio": "clip.wav"},
                                                  {"type": "text", "text": self.prompt}]})
        return turns

    def prompt_text(self) -> str:
        """The chat template applied to one clip's conversation, ending where the model answers."""
        return self.processor.apply_chat_template(self.conversation(), add_generation_prompt=True, tokenize=False)

    def inputs(self, waves: list[np.ndarray]):
        """Tokenised, padded batch (left padding, so every row's answer starts at the same column)."""
        proc = self.processor
        tokenizer = getattr(proc, "tokenizer", proc)
        tokenizer.padding_side = "left"
        text = self.prompt_text()
        audio = [np.asarray(w, dtype=np.float32) for w in waves]
        return proc(text=[text] * len(audio), audio=audio, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                    padding=True)

    # -- generation ----------------------------------------------------------------------------
    def caption(self, waves: list[np.ndarray]) -> list[TeacherOutput]:
        outs: list[TeacherOutput] = []
        for i in range(0, len(waves), self.batch_size):
            outs += self._generate(waves[i:i + self.batch_size])
        return outs

    def _generate(self, waves: list[np.ndarray]) -> list[TeacherOutput]:
        import torch

        if not waves:
            return []
        model = self.model
        batch = self.inputs(waves).to(model.device)
        if "input_features" in batch and model.dtype in (torch.float16, torch.bfloat16):
            batch["input_features"] = batch["input_features"].to(model.dtype)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        with self._lock:
            out = generate(model, batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                           return_dict_in_generate=True, output_scores=True,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new_tokens = out.sequences[:, batch["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        confidences = _mean_token_probability(out.scores, new_tokens, tokenizer.pad_token_id)
        return [self.output(clean_caption(t), confidence=c, extra={"raw": t}) for t, c in zip(texts, confidences)]


@gpu(duration=120)
def generate(model, batch, **options):
    """`model.generate` on a ZeroGPU slice on Spaces (core.models.gpu), as is elsewhere. A plain function of
    the model and the batch, not a method: ZeroGPU runs it in a worker and passes it the arguments."""
    import torch

    with torch.inference_mode():
        return model.generate(**batch, **options)


def model_class(model_type: str):
    """The transformers class that generates text from audio for this model type."""
    import transformers

    if model_type == "qwen2_audio":
        return transformers.Qwen2AudioForConditionalGeneration
    if model_type in ("qwen2_5_omni", "qwen2_5_omni_thinker"):
        return transformers.Qwen2_5OmniThinkerForConditionalGeneration      # thinker only: text out, no talker
    if model_type in ("qwen3_omni_moe", "qwen3_omni_moe_thinker"):
        return transformers.Qwen3OmniMoeThinkerForConditionalGeneration
    raise ValueError(f"model type {model_type!r} is not a supported audio LLM "
                     "(Qwen2-Audio, Qwen2.5-Omni, Qwen3-Omni)")


def _mean_token_probability(scores, tokens, pad_id) -> list[float | None]:
    """Mean probability the model gave its own greedy tokens: a rough confidence per caption."""
    import torch

    if not scores:
        return [None] * len(tokens)
    probs = torch.stack([torch.softmax(s.float(), dim=-1) for s in scores], dim=1)     # [B, T, V]
    chosen = probs.gather(-1, tokens[:, : probs.shape[1], None]).squeeze(-1)            # [B, T]
    mask = (tokens[:, : probs.shape[1]] != pad_id) if pad_id is not None else torch.ones_like(chosen, dtype=bool)
    out = []
    for row, m in zip(chosen, mask):
        out.append(round(float(row[m].mean()), 4) if m.any() else None)
    return out


def clean_caption(text: str) -> str:
    """One line, no quotes around the whole thing, no 'The audio features …' opener."""
    text = " ".join(text.split()).strip().strip('"').strip()
    for opener in ("The audio features ", "This audio features ", "The audio contains ", "In this audio, "):
        if text.lower().startswith(opener.lower()) and len(text) > len(opener) + 3:
            return text[len(opener):]
    return text
