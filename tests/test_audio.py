"""Decoding, resampling, windowing, hashing."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from core.store import audio
from tests.conftest import tone


def test_decode_resamples_and_downmixes(tmp_path):
    stereo = np.stack([tone(1.0, 440, sr=44_100), tone(1.0, 440, sr=44_100)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44_100)
    wave, orig_sr = audio.decode(path)
    assert orig_sr == 44_100
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16_000) <= 1
    # the 440 Hz tone survives resampling: its spectral peak stays at 440 Hz
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16_000 / len(wave) - 440) < 3


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
def test_decode_formats(tmp_path, fmt, ext):
    path = tmp_path / f"x.{ext}"
    sf.write(path, tone(1.0, 300, sr=22_050), 22_050, format=fmt)
    wave, sr = audio.decode(path)
    assert sr == 22_050 and 15_000 < len(wave) < 17_000
    assert np.max(np.abs(wave)) > 0.1


def test_decode_rejects_bad_audio(tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16_000, dtype=np.float32), 16_000)
    with pytest.raises(audio.AudioError, match="silent"):
        audio.decode(silent)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00not really audio" * 10)
    with pytest.raises(audio.AudioError, match="cannot decode"):
        audio.decode(garbage)
    nan = tone(1.0)
    nan[100] = np.nan
    with pytest.raises(audio.AudioError, match="NaN"):
        audio.validate(nan)
    with pytest.raises(audio.AudioError, match="zero-length"):
        audio.validate(np.zeros(0, dtype=np.float32))


def test_content_hash_ignores_container(tmp_path):
    pcm = audio.pcm16(tone(1.0, 500))            # the same 16-bit samples in two containers
    sf.write(tmp_path / "a.wav", pcm, 16_000, subtype="PCM_16")
    sf.write(tmp_path / "a.flac", pcm, 16_000, subtype="PCM_16")
    a, _ = audio.decode(tmp_path / "a.wav")
    b, _ = audio.decode(tmp_path / "a.flac")
    assert audio.content_hash(a) == audio.content_hash(b)
    assert audio.content_hash(a) != audio.content_hash(tone(1.0, 501))


def test_windows_cover_the_recording():
    assert audio.windows(4.0) == [audio.Window(0.0, 4.0)]
    wins = audio.windows(25.0, 10.0, 1.0)
    assert [(w.start, w.end) for w in wins] == [(0.0, 10.0), (9.0, 19.0), (15.0, 25.0)]
    assert all(round(w.end - w.start, 3) == 10.0 for w in wins)
    exact = audio.windows(19.0, 10.0, 1.0)
    assert [(w.start, w.end) for w in exact] == [(0.0, 10.0), (9.0, 19.0)]
    with pytest.raises(ValueError):
        audio.windows(5.0, 2.0, 2.0)


def test_read_slice_roundtrip(tmp_path):
    wave = np.linspace(-0.5, 0.5, 32_000).astype(np.float32)
    audio.write_flac(tmp_path / "x.flac", wave)
    part = audio.read(tmp_path / "x.flac", 0.5, 1.0)
    assert len(part) == 8_000
    np.testing.assert_allclose(part, wave[8_000:16_000], atol=1 / 32_767)


def test_stored_audio_rehashes_identically(tmp_path):
    wave, _ = audio.decode(_wav_bytes(tone(1.0, 700)))
    audio.write_flac(tmp_path / "s.flac", wave)
    again, _ = audio.decode(tmp_path / "s.flac")
    assert audio.content_hash(again) == audio.content_hash(wave)


def _wav_bytes(wave) -> bytes:
    import io
    buf = io.BytesIO()
    sf.write(buf, wave, 16_000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


# -- edge cases and decompression bombs (issue 13: D6, D15) -------------------------------------------

def _constant_flac(path, seconds: float, channels: int = 8, sr: int = 48_000, value: float = 0.25):
    """A tiny FLAC that decodes to a lot of samples: constant audio compresses to almost nothing."""
    frames = int(seconds * sr)
    with sf.SoundFile(path, "w", sr, channels, format="FLAC", subtype="PCM_16") as fh:
        block = np.full((sr, channels), value, dtype=np.float32)
        for start in range(0, frames, sr):
            fh.write(block[:min(sr, frames - start)])
    return path


def test_decode_streams_in_bounded_memory(tmp_path):
    """8 channels at 48 kHz for 20 s is 31 MB as float32; decoding keeps only the 16 kHz mono result."""
    import tracemalloc
    path = _constant_flac(tmp_path / "wide.flac", 20.0)
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        wave, orig_sr = audio.decode(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert orig_sr == 48_000 and abs(len(wave) - 20 * 16_000) <= 1
    assert np.allclose(wave[1000:-1000], 0.25, atol=1e-3)
    assert peak < 8 * 2**20, f"decoding peaked at {peak / 2**20:.1f} MB"


def test_streamed_decode_hashes_like_a_whole_file_decode(tmp_path):
    """Block-wise mixing and resampling give the same samples as doing it in one go (hashes stay stable)."""
    import soxr
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((3 * 44_100 + 123, 2))).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 44_100, subtype="FLOAT")
    wave, _ = audio.decode(tmp_path / "s.wav")
    whole = soxr.resample(stereo.mean(axis=1), 44_100, 16_000, quality="HQ").astype(np.float32)
    assert np.array_equal(wave, np.clip(whole, -1, 1))


def test_decoded_size_cap_refuses_before_decoding(tmp_path):
    path = _constant_flac(tmp_path / "long.flac", 10.0, channels=2)
    with pytest.raises(audio.AudioError, match=r"decodes to .* over the .* limit"):
        audio.decode(path, max_bytes=100_000)           # 10 s at 16 kHz float32 is 640 kB
    wave, _ = audio.decode(path, max_bytes=1_000_000)
    assert len(wave) == 160_000


class _FakeFFmpeg:
    """What audioread hands back for a format libsndfile cannot read: 16-bit interleaved buffers."""

    def __init__(self, wave: np.ndarray, sr: int, duration: float, buffer_bytes: int = 4097):
        self.channels, self.samplerate, self.duration = wave.shape[1], sr, duration
        self._data = audio.pcm16(wave).tobytes()
        self._step = buffer_bytes                   # odd on purpose: buffers end mid-frame

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        for i in range(0, len(self._data), self._step):
            yield self._data[i:i + self._step]


def _not_for_libsndfile(tmp_path):
    path = tmp_path / "x.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    return path


def test_ffmpeg_fallback_streams_and_mixes(tmp_path, monkeypatch):
    import audioread
    stereo = np.stack([tone(1.0, 440, sr=22_050), tone(1.0, 440, sr=22_050)], axis=1)
    monkeypatch.setattr(audioread, "audio_open", lambda path: _FakeFFmpeg(stereo, 22_050, 1.0))
    wave, sr = audio.decode(_not_for_libsndfile(tmp_path))
    assert sr == 22_050 and abs(len(wave) - 16_000) <= 1
    assert np.max(np.abs(wave)) > 0.25


def test_decoded_size_cap_holds_when_the_header_lies(tmp_path, monkeypatch):
    """ffmpeg only estimates the length; the running total is capped too, not only the estimate."""
    import audioread
    long = np.full((10 * 16_000, 1), 0.25, dtype=np.float32)
    monkeypatch.setattr(audioread, "audio_open", lambda path: _FakeFFmpeg(long, 16_000, duration=0.5))
    with pytest.raises(audio.AudioError, match="limit"):
        audio.decode(_not_for_libsndfile(tmp_path), max_bytes=100_000)


def test_truncated_flac_is_refused(tmp_path):
    full = tmp_path / "full.flac"
    sf.write(full, tone(2.0, 440, sr=44_100), 44_100)
    cut = tmp_path / "cut.flac"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(audio.AudioError, match="truncated"):
        audio.decode(cut)


def test_too_short_audio_is_refused(tmp_path):
    one = tmp_path / "one.wav"
    sf.write(one, np.array([0.5], dtype=np.float32), 16_000)
    with pytest.raises(audio.AudioError, match="too short"):
        audio.decode(one)
    enough = tmp_path / "enough.wav"
    sf.write(enough, tone(audio.MIN_SECONDS), 16_000)
    assert len(audio.decode(enough)[0]) == int(audio.MIN_SECONDS * 16_000)


def test_non_audio_gets_a_readable_reason(tmp_path):
    text = tmp_path / "passwd.wav"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(audio.AudioError) as err:
        audio.decode(text)
    message = str(err.value)
    assert "not an audio file" in message and "NoBackendError: )" not in message
    with pytest.raises(audio.AudioError, match="not an audio file"):
        audio.decode(b"hello world" * 10)
