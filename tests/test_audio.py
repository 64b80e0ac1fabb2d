"""Decoding, resampling, windowing, hashing."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from core import audio
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
