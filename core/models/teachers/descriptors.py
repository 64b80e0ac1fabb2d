"""Simple acoustic descriptors of a clip with librosa: loudness, duration, how eventful it is.

The composer turns these into words ("quiet", "steady", "repeated bursts"); they are also
stored as tags' context in `TeacherOutput.extra`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SR = 16_000
HOP = 256                       # 16 ms level blocks
MEL_HOP = 160                   # YAMNet's log-mel hop (10 ms)


@dataclass
class Descriptors:
    duration: float              # seconds
    rms_db: float                # overall level, dBFS
    peak_db: float               # loudest 64 ms frame, dBFS
    dynamic_range_db: float      # loud frames vs quiet frames (p95 - p10 of the envelope)
    active_fraction: float       # share of frames within 20 dB of the loudest
    onsets: int                  # detected note / hit onsets
    onset_rate: float            # per second
    bursts: int                  # separate loud stretches (runs of active frames)
    centroid_hz: float           # spectral centroid, loudness-weighted
    loud_span: tuple[float, float]   # first/last active time, seconds
    pitch_hz: float | None = None    # median voice pitch; set only where a voice is likely (see voice_pitch)

    @property
    def loudness(self) -> str:
        if self.rms_db < -45:
            return "very quiet"
        if self.rms_db < -32:
            return "quiet"
        if self.rms_db > -14:
            return "loud"
        return "moderate"

    @property
    def stationary(self) -> bool:
        """A steady sound: little level change and few attacks."""
        return self.dynamic_range_db < 12 and self.active_fraction > 0.8 and self.onset_rate < 2.5

    @property
    def impulsive(self) -> bool:
        """Short separate events (hits, clicks, knocks) with quiet between them."""
        return self.active_fraction < 0.5 and self.dynamic_range_db > 18

    def as_dict(self) -> dict:
        d = asdict(self)
        d["loud_span"] = list(self.loud_span)
        d.update(loudness=self.loudness, stationary=self.stationary, impulsive=self.impulsive)
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def describe(wave: np.ndarray, mel: np.ndarray | None = None, sr: int = SR) -> Descriptors:
    """Descriptors of one 16 kHz wave. `mel` is YAMNet's log-mel ([frames, 64], 10 ms hop) when the
    caller already has it (the embedded teacher does), so the spectrum is computed once per clip."""
    import librosa

    from core.models import yamnet

    y = np.asarray(wave, dtype=np.float32)
    duration = len(y) / sr
    if mel is None:
        mel = yamnet.log_mel(y)
    # level envelope straight from the samples: RMS of 16 ms blocks
    n = max(1, len(y) // HOP)
    blocks = np.pad(y, (0, max(0, n * HOP - len(y))))[: n * HOP].reshape(n, HOP)
    env_db = 20 * np.log10(np.maximum(np.sqrt((blocks ** 2).mean(axis=1)), 1e-6))
    env_db = np.convolve(env_db, np.ones(4) / 4, mode="same") if n >= 4 else env_db   # ~64 ms smoothing
    peak_db = float(env_db.max())
    active = env_db > peak_db - 20
    # onsets from the log-mel (YAMNet's front end: 10 ms hop)
    mel_db = (20 / np.log(10)) * mel.T                                     # natural log magnitude -> dB
    strength = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=MEL_HOP)
    onsets = librosa.onset.onset_detect(onset_envelope=strength, sr=sr, hop_length=MEL_HOP, units="time",
                                        delta=0.2 * float(strength.max() or 1.0))
    block_of = lambda t: min(int(t * sr / HOP), len(env_db) - 1)            # noqa: E731
    onsets = [t for t in onsets if env_db[block_of(t)] > peak_db - 25]      # audible ones only
    power = np.exp(2 * mel).sum(axis=0)
    centroid = float(power @ _mel_centres() / max(power.sum(), 1e-12))
    times = np.flatnonzero(active) * HOP / sr
    return Descriptors(
        duration=float(duration),
        rms_db=float(20 * np.log10(max(float(np.sqrt(np.mean(y ** 2))), 1e-6))),
        peak_db=peak_db,
        dynamic_range_db=float(np.percentile(env_db, 95) - np.percentile(env_db, 10)),
        active_fraction=float(active.mean()),
        onsets=len(onsets),
        onset_rate=len(onsets) / max(duration, 1e-3),
        bursts=_runs(_smooth(active, 12)),
        centroid_hz=centroid,
        loud_span=(float(times[0]), float(min(times[-1] + HOP / sr, duration))) if len(times) else (0.0, 0.0),
    )


def voice_pitch(wave: np.ndarray, sr: int = SR) -> float | None:
    """Median f0 of the loud frames (YIN, 60–600 Hz); None when too little is voiced."""
    import librosa

    y = np.asarray(wave, dtype=np.float32)
    if len(y) < 2048:
        return None
    f0 = librosa.yin(y, fmin=60, fmax=600, sr=sr, frame_length=1024, hop_length=256)
    rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=256)[0][: len(f0)]
    loud = rms > 0.3 * rms.max()
    plausible = (f0 > 65) & (f0 < 590)
    keep = f0[: len(loud)][loud & plausible[: len(loud)]]
    return float(np.median(keep)) if len(keep) >= 5 else None


def _mel_centres() -> np.ndarray:
    import librosa
    return librosa.mel_frequencies(n_mels=66, fmin=125, fmax=7500, htk=True)[1:-1]


def _smooth(mask: np.ndarray, gap: int) -> np.ndarray:
    """Close gaps shorter than `gap` frames so one event with a dip counts once."""
    mask = mask.copy()
    idx = np.flatnonzero(mask)
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a <= gap:
            mask[a:b] = True
    return mask


def _runs(mask: np.ndarray) -> int:
    return int(np.sum(np.diff(np.concatenate([[0], mask.astype(np.int8)])) == 1))
