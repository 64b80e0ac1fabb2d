"""Import: folders, zips, meta.csv, re-import, and every kind of bad input."""
from __future__ import annotations

import os
import threading
import zipfile

import numpy as np
import pytest
import soundfile as sf

from core.pipeline.importer import import_paths
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
    from core.store.settings import load_settings
    from core.store.workspace import Workspace
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


# -- issue 13: decompression bombs (D6), meta.csv problems (D10), edge-case audio and names (D15) -----

def _small_ws(tmp_path, mb: float):
    from core.store.settings import load_settings
    from core.store.workspace import Workspace
    small = load_settings(workspace=tmp_path / "w", max_upload_mb=mb)
    return Workspace(small.workspace, small)


def _zeros_zip(path, sizes: dict[str, int]):
    """A zip of entries of zeros: a few kB on disk, `sizes` bytes each once extracted."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, size in sizes.items():
            with zf.open(name, "w") as fh:
                chunk = bytes(1 << 20)
                for start in range(0, size, len(chunk)):
                    fh.write(chunk[:min(len(chunk), size - start)])
    return path


def test_zip_bomb_entry_is_refused_without_being_written(tmp_path, monkeypatch):
    from core.store import files as importer
    ws = _small_ws(tmp_path, 1.0)
    bomb = _zeros_zip(tmp_path / "bomb.zip", {"zeros.wav": 8 << 20})        # 8 MB of zeros in ~8 kB
    assert bomb.stat().st_size < 100_000
    written = []
    real_copy = importer._copy_capped
    monkeypatch.setattr(importer, "_copy_capped", lambda *a, **k: written.append(a) or real_copy(*a, **k))
    report = import_paths(ws, [bomb])
    [result] = report.results
    assert result.status == "error" and "over the 1 MB limit" in result.message, result
    assert written == []                                   # refused from the zip's directory, not after writing
    assert not list(ws.cache_dir.glob("import-*"))


def test_zip_entry_lying_about_its_size_is_cut_off(tmp_path):
    """zipfile trusts the central directory; the copy itself is capped as well."""
    from core.store import files as importer
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(3 << 20))
    out = tmp_path / "out.bin"
    with open(src, "rb") as fh, pytest.raises(importer.TooLarge):
        importer._copy_capped(fh, out, 1 << 20)
    assert not out.exists()


def test_zip_total_expansion_is_capped(tmp_path):
    ws = _small_ws(tmp_path, 1.0)
    archive = _zeros_zip(tmp_path / "many.zip", {f"{i}.wav": 900_000 for i in range(30)})   # each under 1 MB
    report = import_paths(ws, [archive])
    refused = [r for r in report.results if "expands to more than" in r.message]
    assert refused and len(refused) < 30, [r.message for r in report.results][:3]


def test_oversized_decode_is_refused_with_a_clear_message(tmp_path):
    from tests.test_audio import _constant_flac
    ws = _small_ws(tmp_path, 0.5)                          # decoded cap 0.5 MB: about 8 s at 16 kHz
    path = _constant_flac(tmp_path / "bomb.flac", 20.0)     # a few kB, 31 MB as 8-ch 48 kHz float32
    [result] = import_paths(ws, [path]).results
    assert result.status == "error" and "decodes to" in result.message and "limit" in result.message


def test_malformed_meta_csv_is_reported_and_the_rest_imports(ws, tmp_path):
    src = tmp_path / "m"
    write(src / "good.flac", tone(1.0, 300))
    write(src / "other.flac", tone(1.0, 500))
    (src / "meta.csv").write_text("filename,label\ngood.flac," + "x" * 200_000 + "\nother.flac,tone\n")
    report = import_paths(ws, [src])
    assert report.count("imported") == 2
    warning = next(r for r in report.results if r.status == "warning")
    assert warning.name.endswith("meta.csv") and "line 2" in warning.message
    metas = {r.original_name: r.meta for r in ws.catalog.recordings()}
    assert metas == {"good.flac": {}, "other.flac": {"label": "tone"}}
    assert "warning" in report.summary()


def test_meta_csv_without_filename_column_or_with_a_repeated_one_is_reported(ws, tmp_path):
    write(tmp_path / "a" / "x.wav", tone(1.0, 300))
    (tmp_path / "a" / "meta.csv").write_text("file,label\nx.wav,hum\n")
    write(tmp_path / "b" / "y.wav", tone(1.0, 600))
    (tmp_path / "b" / "meta.csv").write_text("filename,label,filename\ny.wav,hum,z.wav\n")
    report = import_paths(ws, [tmp_path / "a", tmp_path / "b"])
    assert report.count("imported") == 2
    warnings = [r.message for r in report.results if r.status == "warning"]
    assert any("no 'filename' column" in w for w in warnings), warnings
    assert any("repeats" in w and "filename" in w for w in warnings), warnings


def test_zip_inside_a_folder_is_reported(ws, tmp_path):
    write(tmp_path / "set" / "a.wav", tone(1.0, 300))
    with zipfile.ZipFile(tmp_path / "set" / "more.zip", "w") as zf:
        zf.writestr("b.wav", b"x")
    report = import_paths(ws, [tmp_path / "set"])
    assert report.count("imported") == 1
    [skipped] = [r for r in report.results if r.name == "more.zip"]
    assert skipped.status == "warning" and "zip" in skipped.message


def test_edge_case_audio_is_refused_with_reasons(ws, tmp_path):
    one = write(tmp_path / "one.wav", np.array([0.5], dtype=np.float32))
    full = write(tmp_path / "full.flac", tone(2.0, 440, sr=44_100), 44_100)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    text = tmp_path / "passwd.wav"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    r = by_name(import_paths(ws, [one, cut, text]))
    assert "too short" in r["one.wav"].message
    assert "truncated" in r["cut.flac"].message
    assert "not an audio file" in r["passwd.wav"].message and "NoBackendError: )" not in r["passwd.wav"].message
    assert not ws.catalog.recordings()


def test_special_files_are_refused(ws, tmp_path):
    (tmp_path / "dev").mkdir()
    fifo = tmp_path / "dev" / "pipe.wav"
    os.mkfifo(fifo)                                        # opening it would block the import for ever
    in_folder, given = import_paths(ws, [tmp_path / "dev", fifo]).results
    assert in_folder.name == "pipe.wav" and "not a regular file" in in_folder.message
    assert given.status == "error" and "not a regular file" in given.message


def test_control_characters_in_names_cannot_break_line_output(ws, tmp_path, capsys):
    from core.__main__ import main
    write(tmp_path / "set" / "two\nlines\r.wav", tone(1.0, 300))
    write(tmp_path / "set" / "bad\x1b[31m.wav", np.array([0.5], dtype=np.float32))
    report = import_paths(ws, [tmp_path / "set"])
    names = {r.name for r in report.results}
    assert all(not any(ord(ch) < 32 for ch in n) for n in names), names
    assert ws.catalog.recordings()[0].original_name == "two\ufffdlines\ufffd.wav"
    assert main(["import", str(tmp_path / "set"), "--verbose", "--workspace", str(tmp_path / "cli-ws")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "two\ufffdlines" in out
