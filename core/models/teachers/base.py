"""The one interface every teacher backend implements.

A teacher hears a batch of 16 kHz mono waves and returns, for each, a caption,
tags with scores, a confidence and its own identity (backend, model id,
prompt or composer version), so every caption in the catalogue says where it
came from.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000


@dataclass
class TeacherOutput:
    caption: str
    tags: dict[str, float] = field(default_factory=dict)   # tag -> score in [0, 1]
    confidence: float | None = None                      # 0..1 where the backend can tell
    teacher: str = ""                                      # backend name, e.g. "embedded"
    model: str = ""                                        # model id inside the backend
    prompt: str = ""                                       # prompt text, or composer version
    extra: dict = field(default_factory=dict)              # backend details (transcript, descriptors…)


class Teacher(ABC):
    """Subclasses set `name`, `model_id`, `prompt` and implement `caption`."""

    name: str = ""
    model_id: str = ""
    prompt: str = ""
    batch_size: int = 16          # how many clips the captioning pipeline hands over at once

    @abstractmethod
    def caption(self, waves: list[np.ndarray]) -> list[TeacherOutput]:
        """One output per wave, in order. May raise; see `caption_each`."""

    def caption_each(self, waves: list[np.ndarray]) -> list[TeacherOutput | Exception]:
        """Like `caption`, but a failure stays with the clip that caused it.

        Tries the whole batch first (fast path); if that raises, captions clip by clip
        so one bad clip costs only itself.
        """
        try:
            outs = self.caption(waves)
            if len(outs) != len(waves):
                raise RuntimeError(f"{self.name} returned {len(outs)} captions for {len(waves)} clips")
            return list(outs)
        except Exception:  # noqa: BLE001 - isolate the culprit below
            if len(waves) == 1:
                import sys
                return [sys.exc_info()[1]]
        results: list[TeacherOutput | Exception] = []
        for wave in waves:
            try:
                results.append(self.caption([wave])[0])
            except Exception as exc:  # noqa: BLE001 - recorded per clip by the caller
                results.append(exc)
        return results

    @property
    def identity(self) -> str:
        """Backend + model: with the prompt, this is what a cached caption depends on."""
        return f"{self.name}:{self.model_id}"

    def cache_key(self, clip_key: str) -> str:
        prompt_hash = hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:16]
        return f"{clip_key}|{self.identity}|{prompt_hash}"

    def output(self, caption: str, **kw) -> TeacherOutput:
        return TeacherOutput(caption=caption, teacher=self.name, model=self.model_id, prompt=self.prompt, **kw)

    def close(self) -> None:
        """Free models / connections. Safe to call twice."""
