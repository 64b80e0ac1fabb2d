"""Audio I/O: decode anything to 16 kHz mono float32, hash it, cut it into windows."""
from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
SILENCE_PEAK = 1e-4          # a clip whose peak is below this is "all silent" (-80 dBFS)


class AudioError(ValueError):
    """A file that cannot become a usable clip; the message is shown to the user."""


@dataclass(frozen=True)
class Window:
    start: float
    end: float


def decode(source: str | Path | bytes, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Decode a file (path or bytes) to mono float32 at `sr`. Returns (wave, original_sr).

    soundfile (libsndfile) covers wav/flac/ogg/mp3; librosa's audioread fallback
    covers what ffmpeg can read when it is installed.
    """
    try:
        if isinstance(source, (bytes, bytearray)):
            wave, orig_sr = sf.read(io.BytesIO(source), dtype="float32", always_2d=True)
        else:   # an open handle: libsndfile cannot take file names that are not valid UTF-8
            with open(source, "rb") as fh:
                wave, orig_sr = sf.read(fh, dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
    except Exception as sf_error:  # noqa: BLE001 - any decoder failure becomes one clear message
        if isinstance(source, (bytes, bytearray)):
            raise AudioError(f"cannot decode audio ({sf_error})") from None
        try:
            import librosa
            wave, orig_sr = librosa.load(str(source), sr=None, mono=True)
        except Exception as lr_error:  # noqa: BLE001
            raise AudioError(f"cannot decode audio ({type(lr_error).__name__}: {lr_error})") from None
    return validate(resample(wave, orig_sr, sr)), int(orig_sr)


def resample(wave: np.ndarray, orig_sr: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    if orig_sr == sr:
        return np.ascontiguousarray(wave, dtype=np.float32)
    import soxr  # what librosa itself uses for its default "soxr_hq"
    return soxr.resample(wave, orig_sr, sr, quality="HQ").astype(np.float32)


def validate(wave: np.ndarray) -> np.ndarray:
    """Reject waves no model should see; clip the rest into [-1, 1]."""
    if wave.size == 0:
        raise AudioError("zero-length audio")
    if not np.all(np.isfinite(wave)):
        raise AudioError("audio contains NaN or infinite samples")
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise AudioError("audio is silent (peak below -80 dBFS)")
    return np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False)


def pcm16(wave: np.ndarray) -> np.ndarray:
    # ×32768 mirrors how decoders map int16 → float, so decode → pcm16 is exact and re-hashing is stable
    return np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)


def content_hash(wave: np.ndarray) -> str:
    """sha256 of the 16-bit PCM at 16 kHz: the same sound in any container hashes the same."""
    return hashlib.sha256(pcm16(wave).tobytes()).hexdigest()


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_flac(path: Path, wave: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp.flac")   # unique per writer
    sf.write(tmp, pcm16(wave), sr, format="FLAC", subtype="PCM_16")
    tmp.replace(path)


def read(path: str | Path, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Read a stored 16 kHz file, optionally a [start, end) slice in seconds."""
    with sf.SoundFile(str(path)) as fh:
        first = int(round(start * fh.samplerate))
        last = fh.frames if end is None else min(fh.frames, int(round(end * fh.samplerate)))
        fh.seek(first)
        wave = fh.read(max(0, last - first), dtype="float32", always_2d=True).mean(axis=1)
        if fh.samplerate != SAMPLE_RATE:
            wave = resample(wave, fh.samplerate)
    return wave


def windows(duration: float, length: float = 10.0, overlap: float = 1.0) -> list[Window]:
    """Cut [0, duration) into windows of `length` s overlapping by `overlap` s.

    A recording no longer than one window is one clip. The last window is
    aligned to the end, so every window is full length and the tail is kept.
    """
    if length <= 0 or not 0 <= overlap < length:
        raise ValueError("window length must be > 0 and overlap in [0, length)")
    if duration <= length:
        return [Window(0.0, round(duration, 3))]
    hop = length - overlap
    starts = list(np.arange(0.0, duration - length + 1e-9, hop))
    if starts[-1] + length < duration - 1e-6:
        starts.append(duration - length)
    return [Window(round(float(s), 3), round(float(s) + length, 3)) for s in starts]


def spectrogram_png(wave: np.ndarray, path: Path, sr: int = SAMPLE_RATE) -> Path:
    """A log-mel spectrogram picture for the UI.

    Uses matplotlib's object API (no pyplot state), so tabs may draw from several threads at once.
    """
    import librosa
    import librosa.display
    from matplotlib.figure import Figure

    mel = librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=512, hop_length=160, n_mels=64, fmax=8000)
    fig = Figure(figsize=(8, 2.4), dpi=100)
    ax = fig.add_subplot()
    librosa.display.specshow(librosa.power_to_db(mel, ref=np.max), sr=sr, hop_length=160,
                             x_axis="time", y_axis="mel", fmax=8000, ax=ax, cmap="magma")
    ax.set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path
