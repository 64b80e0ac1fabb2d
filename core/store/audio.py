"""Audio I/O: decode anything to 16 kHz mono float32, hash it, cut it into windows."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from core.store.files import atomic_write, megabytes

SAMPLE_RATE = 16_000
SILENCE_PEAK = 1e-4          # a clip whose peak is below this is "all silent" (-80 dBFS)
MIN_SECONDS = 0.1            # shorter audio is refused: too little for any model (and a 0-length clip)
BLOCK_FRAMES = 1 << 16       # frames decoded at a time
MAX_DECODED_BYTES = 200 * 2**20   # default cap on a decoded wave (float32 at 16 kHz: about 55 min)


class AudioError(ValueError):
    """A file that cannot become a usable clip; the message is shown to the user."""


@dataclass(frozen=True)
class Window:
    start: float
    end: float


def decode(source: str | Path | bytes, sr: int = SAMPLE_RATE, *,
           max_bytes: int | None = MAX_DECODED_BYTES) -> tuple[np.ndarray, int]:
    """Decode a file (path or bytes) to mono float32 at `sr`. Returns (wave, original_sr).

    soundfile (libsndfile) covers wav/flac/ogg/mp3; audioread (ffmpeg, when installed) covers the
    rest. Audio is decoded block by block, mixed to mono and resampled as it comes, so memory holds
    little more than the result, and `max_bytes` caps that result (float32 at `sr`) before decoding
    starts and as it grows: a tiny file of constant samples cannot make the decoder take gigabytes.
    """
    try:
        wave, orig_sr = _decode_soundfile(source, sr, max_bytes)
    except _NotSoundfile as sf_error:
        if isinstance(source, (bytes, bytearray)):
            raise AudioError(f"cannot decode audio: not an audio file libsndfile can read ({sf_error})") from None
        wave, orig_sr = _decode_audioread(source, sr, max_bytes, str(sf_error))
    return validate(wave, sr), int(orig_sr)


class _NotSoundfile(Exception):
    """libsndfile does not recognise the file (another decoder may)."""


def _libsndfile_detail(exc: Exception) -> str:
    # LibsndfileError.error_string is the reason alone, without the file handle's repr
    return (getattr(exc, "error_string", None) or str(exc) or type(exc).__name__).strip()


def _opened(source: str | Path | bytes):
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source)
    try:    # an open handle: libsndfile cannot take file names that are not valid UTF-8
        return open(source, "rb")
    except OSError as exc:
        raise AudioError(f"cannot read the file ({exc.strerror or type(exc).__name__})") from None


def _decode_soundfile(source: str | Path | bytes, sr: int, max_bytes: int | None) -> tuple[np.ndarray, int]:
    with _opened(source) as fh:
        try:
            f = sf.SoundFile(fh)
        except Exception as exc:  # noqa: BLE001 - any open failure means "try another decoder"
            raise _NotSoundfile(_libsndfile_detail(exc)) from None
        with f:
            declared = f.frames / f.samplerate
            _check_decoded_size(declared, sr, max_bytes)
            stream = _MonoStream(f.samplerate, sr, max_bytes)
            try:
                while len(block := f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)):
                    stream.feed(block)
            except Exception as exc:  # noqa: BLE001 - libsndfile gave up part way: a cut or damaged file
                raise AudioError(f"cannot decode audio: truncated or corrupt ({stream.frames_in / f.samplerate:.2f} s "
                                 f"of {declared:.2f} s decoded: {_libsndfile_detail(exc)})") from None
            # MP3 headers only estimate their length; the other formats state it exactly
            if f.format != "MPEG" and stream.frames_in < f.frames:
                raise AudioError(f"cannot decode audio: truncated (the header promises {declared:.2f} s, "
                                 f"only {stream.frames_in / f.samplerate:.2f} s decodes)")
            return stream.finish(), f.samplerate


def _decode_audioread(path: str | Path, sr: int, max_bytes: int | None, sf_detail: str) -> tuple[np.ndarray, int]:
    """What libsndfile cannot read, through ffmpeg (audioread), streamed the same way."""
    import audioread
    try:
        with audioread.audio_open(str(path)) as f:
            channels, orig_sr = f.channels, f.samplerate
            _check_decoded_size(f.duration or 0.0, sr, max_bytes)
            stream = _MonoStream(orig_sr, sr, max_bytes)
            frame_bytes, pending = 2 * channels, b""         # 16-bit interleaved; a buffer may end mid-frame
            for buf in f:
                data = pending + bytes(buf)
                usable = len(data) - len(data) % frame_bytes
                pending = data[usable:]
                block = np.frombuffer(data[:usable], "<i2").astype(np.float32) / np.float32(32768.0)
                stream.feed(block.reshape(-1, channels))
            return stream.finish(), orig_sr
    except AudioError:
        raise
    except audioread.NoBackendError:
        raise AudioError("cannot decode audio: not an audio file libsndfile or ffmpeg can read "
                         f"({sf_detail})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one clear message
        raise AudioError(f"cannot decode audio ({type(exc).__name__}: {exc or sf_detail})") from None


def _check_decoded_size(seconds: float, sr: int, max_bytes: int | None) -> None:
    size = seconds * sr * 4                                        # float32 mono at `sr`
    if max_bytes is not None and size > max_bytes:
        length = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.1f} s"
        raise AudioError(f"audio decodes to {megabytes(size)} ({length}), over the "
                         f"{megabytes(max_bytes)} limit; split it into shorter files")


class _MonoStream:
    """Mixes decoded blocks to mono and resamples them as they come, keeping only the result.

    Same samples as mixing and resampling the whole file at once (soxr's stream is exact), so
    content hashes do not depend on the block size.
    """

    def __init__(self, orig_sr: int, sr: int, max_bytes: int | None):
        import soxr
        self.sr, self.max_bytes = sr, max_bytes
        self.resampler = None if orig_sr == sr else soxr.ResampleStream(orig_sr, sr, 1, dtype="float32", quality="HQ")
        self.parts: list[np.ndarray] = []
        self.frames_in = self.size = 0

    def feed(self, block: np.ndarray) -> None:
        self.frames_in += len(block)
        mono = np.ascontiguousarray(block.mean(axis=1), dtype=np.float32)
        self._keep(mono if self.resampler is None else self.resampler.resample_chunk(mono, last=False))

    def finish(self) -> np.ndarray:
        if self.resampler is not None:
            self._keep(self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        return np.concatenate(self.parts).astype(np.float32, copy=False) if self.parts else np.zeros(0, np.float32)

    def _keep(self, part: np.ndarray) -> None:
        self.size += part.nbytes
        if self.max_bytes is not None and self.size > self.max_bytes:   # headers can understate the length
            raise AudioError(f"audio decodes to more than the {megabytes(self.max_bytes)} limit; "
                             "split it into shorter files")
        if len(part):
            self.parts.append(part)


def resample(wave: np.ndarray, orig_sr: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    if orig_sr == sr:
        return np.ascontiguousarray(wave, dtype=np.float32)
    import soxr  # what librosa itself uses for its default "soxr_hq"
    return soxr.resample(wave, orig_sr, sr, quality="HQ").astype(np.float32)


def validate(wave: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Reject waves no model should see; clip the rest into [-1, 1]."""
    if wave.size == 0:
        raise AudioError("zero-length audio")
    if wave.size < round(MIN_SECONDS * sr):
        raise AudioError(f"audio is too short ({wave.size / sr:.3f} s; at least {MIN_SECONDS} s is needed)")
    if not np.all(np.isfinite(wave)):
        raise AudioError("audio contains NaN or infinite samples")
    if max(float(wave.max()), -float(wave.min())) < SILENCE_PEAK:
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
    with atomic_write(path) as tmp:
        sf.write(tmp, pcm16(wave), sr, format="FLAC", subtype="PCM_16")


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
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
