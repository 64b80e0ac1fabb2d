"""Import: folders, zips, meta.csv, re-import, and every kind of bad input."""
from __future__ import annotations

import os
import threading
import zipfile

import numpy as np
import soundfile as sf

from core.importer import import_paths
from tests.conftest import tone


def write(path, wave, sr=16_000, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr, **kw)
    return path


def by_name(report):
    return {r.name: r for r in report.results}


def test_folder_with_meta_csv_and_reimport(ws, tmp_path):
    src = tmp_path / "set"
    write(src / "audio" / "a.flac", tone(2.0, 300))
    write(src / "audio" / "b.wav", tone(3.0, 600, sr=44_100), 44_100)
    (src / "meta.csv").write_text("filename,label,caption\na.flac,hum,a low hum\nb.wav,whistle,\n")
    report = import_paths(ws, [src])
    assert report.count("imported") == 2 and report.count("error") == 0
    recs = {r.original_name: r for r in ws.catalog.recordings()}
    assert recs["audio/a.flac"].meta == {"label": "hum", "caption": "a low hum"}
    assert recs["audio/b.wav"].sample_rate == 44_100 and recs["audio/b.wav"].source == "set"
    assert ws.audio_path(recs["audio/a.flac"].sha256).exists()
    again = import_paths(ws, [src])
    assert again.count("duplicate") == 2 and len(ws.catalog.recordings()) == 2


def test_same_audio_in_another_container_is_not_duplicated(ws, tmp_path):
    pcm = (tone(1.0, 440) * 32768).astype(np.int16)
    write(tmp_path / "x.wav", pcm, subtype="PCM_16")
    write(tmp_path / "x.flac", pcm, subtype="PCM_16")
    report = import_paths(ws, [tmp_path / "x.wav", tmp_path / "x.flac"])
    assert [r.status for r in report.results] == ["imported", "duplicate"]


def test_long_recording_is_windowed(ws, tmp_path):
    write(tmp_path / "long.wav", tone(25.0, 200))
    report = import_paths(ws, [tmp_path / "long.wav"])
    assert report.results[0].clips == 3
    clips = ws.catalog.clips()
    assert [(c.start, c.end) for c in clips] == [(0.0, 10.0), (9.0, 19.0), (15.0, 25.0)]
    assert abs(len(ws.load_clip(clips[1])) - 160_000) <= 1


def test_bad_inputs_are_reported_and_the_batch_goes_on(ws, tmp_path, settings):
    good = write(tmp_path / "good.wav", tone(1.0))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + os.urandom(2000))
    silent = write(tmp_path / "silent.wav", np.zeros(16_000, dtype=np.float32))
    nan = tmp_path / "nan.wav"
    wave = tone(1.0)
    wave[10] = np.nan
    write(nan, wave, subtype="FLOAT")
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    missing = tmp_path / "missing.wav"
    report = import_paths(ws, [corrupt, empty, silent, nan, text, missing, good])
    r = by_name(report)
    assert r["good.wav"].status == "imported"
    assert "empty" in r["empty.wav"].message
    assert "cannot decode" in r["corrupt.flac"].message
    assert "silent" in r["silent.wav"].message
    assert "NaN" in r["nan.wav"].message
    assert "unsupported" in r["notes.txt"].message
    assert "no such" in r[str(missing)].message
    assert len(ws.catalog.recordings()) == 1              # nothing half-written for the failures
    assert len(list(ws.audio_dir.rglob("*.flac"))) == 1


def test_size_limit(tmp_path):
    from core.settings import load_settings
    from core.workspace import Workspace
    small = load_settings(workspace=tmp_path / "w", max_upload_mb=0.01)
    ws = Workspace(small.workspace, small)
    write(tmp_path / "big.wav", tone(2.0))                 # 64 kB > 10 kB
    report = import_paths(ws, [tmp_path / "big.wav"])
    assert report.results[0].status == "error" and "limit" in report.results[0].message


def test_zip_with_slip_entries_and_duplicate_names(ws, tmp_path):
    wav = write(tmp_path / "w.wav", tone(1.0, 330))
    other = write(tmp_path / "o.wav", tone(1.0, 550))
    archive = tmp_path / "pack.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(wav, "a/clip.wav")
        zf.write(other, "b/clip.wav")                       # same name, different folder and audio
        zf.writestr("../../evil.wav", wav.read_bytes())     # zip-slip
        zf.writestr("/abs.wav", wav.read_bytes())
        zf.writestr("meta.csv", "filename,label\nclip.wav,tone\n")
    report = import_paths(ws, [archive])
    statuses = sorted(r.status for r in report.results)
    assert statuses == ["error", "error", "imported", "imported"], report.results
    assert all("zip-slip" in r.message for r in report.results if r.status == "error")
    assert not (tmp_path.parent / "evil.wav").exists()
    assert {r.source for r in ws.catalog.recordings()} == {"pack"}
    assert {r.meta.get("label") for r in ws.catalog.recordings()} == {"tone"}


def test_broken_zip_and_empty_folder(ws, tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 broken")
    (tmp_path / "empty").mkdir()
    report = import_paths(ws, [bad, tmp_path / "empty"])
    messages = " ".join(r.message for r in report.results)
    assert "not a readable zip" in messages and "no audio" in messages


def test_non_utf8_file_name(ws, tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.wav"              # latin-1 bytes, invalid UTF-8
    with open(raw, "wb") as fh:
        sf.write(fh, tone(1.0), 16_000, format="WAV")
    report = import_paths(ws, [tmp_path])
    assert report.count("imported") == 1
    assert ws.catalog.recordings()[0].original_name == "caf\ufffd.wav"


def test_cancel_then_resume_without_duplicates(ws, tmp_path):
    for i in range(5):
        write(tmp_path / "set" / f"{i}.wav", tone(1.0, 200 + 50 * i))
    cancel = threading.Event()

    def progress(done, total, name):
        if done == 2:
            cancel.set()

    first = import_paths(ws, [tmp_path / "set"], progress=progress, cancel=cancel)
    assert first.cancelled and first.count("imported") == 2
    second = import_paths(ws, [tmp_path / "set"])
    assert second.count("imported") == 3 and second.count("duplicate") == 2
    assert len(ws.catalog.recordings()) == 5


def test_real_shared_set(ws, shared_data):
    report = import_paths(ws, [shared_data / "ovos_animals"])
    assert report.count("imported") == 10
    labels = sorted(r.meta["label"] for r in ws.catalog.recordings())
    assert labels[:3] == ["cat", "cow", "dog"]
