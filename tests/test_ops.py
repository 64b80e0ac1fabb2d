"""`doctor` on a deliberately damaged workspace; backup → restore round trip."""
from __future__ import annotations

import zipfile

import pytest

from core.backup import backup, restore
from core.doctor import doctor


def test_doctor_finds_and_repairs_damage(demo_ws):
    ws = demo_ws
    assert doctor(ws, check_index=False).healthy
    recs = ws.catalog.recordings()
    # damage: an orphan audio file, a half-written temp file, a dead "running" run, a model with no files
    orphan = ws.audio_path("f" * 64)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(ws.audio_path(recs[0].sha256).read_bytes())
    (ws.audio_dir / "ab").mkdir(exist_ok=True)
    (ws.audio_dir / "ab" / "x.123-4.tmp.flac").write_bytes(b"half")
    run = ws.catalog.add_run({"epochs": 1})
    ws.catalog.update_run(run.id, status="running", pid=2**22 + 12345)
    ws.catalog.register_model("ghost", str(ws.models_dir / "ghost"))
    ws.catalog.set_active_model("ghost")
    # and a recording whose audio vanished: reported, never "repaired" by deleting its captions
    ws.audio_path(recs[1].sha256).unlink()

    report = doctor(ws, check_index=False)
    bad = {f.check for f in report.findings if not f.ok}
    assert bad == {"orphan audio", "temp files", "training runs", "model files", "audio files"}

    repaired = doctor(ws, repair=True, check_index=False)
    fixed = {f.check for f in repaired.findings if f.repaired}
    assert fixed == {"orphan audio", "temp files", "training runs", "model files"}
    assert (ws.root / "lost+found" / orphan.name).exists() and not orphan.exists()
    assert ws.catalog.get_run(run.id).status == "failed"
    assert ws.catalog.active_model() is None
    assert len(ws.catalog.recordings()) == 10              # nothing deleted from the catalogue
    after = doctor(ws, check_index=False)
    assert {f.check for f in after.findings if not f.ok} == {"audio files", "model files"}


def test_doctor_reports_sqlite_damage(ws, tmp_path):
    db = ws.root / "catalog.db"
    ws.catalog.set_value("k", "v")
    import sqlite3
    con = sqlite3.connect(db)
    con.execute("PRAGMA foreign_keys=OFF")
    con.execute("INSERT INTO clips(recording_id, start, end) VALUES(999, 0, 1)")    # dangling foreign key
    con.commit()
    con.close()
    report = doctor(ws, check_index=False)
    sqlite_finding = next(f for f in report.findings if f.check == "sqlite")
    assert not sqlite_finding.ok and "clips" in sqlite_finding.detail


def test_backup_restore_round_trip(demo_ws, tmp_path):
    ws = demo_ws
    clip = ws.catalog.clip_ids()[0]
    ws.catalog.add_caption(clip, "a cat meows", "teacher", teacher="embedded")
    ws.load_clip(clip) is not None and ws.clip_wav_path(clip)         # populates cache/, which is skipped
    out = backup(ws, tmp_path / "b.zip")
    names = zipfile.ZipFile(out).namelist()
    assert "catalog.db" in names and not any(n.startswith("cache/") for n in names)
    restored = restore(out, tmp_path / "restored")
    assert restored.catalog.stats().recordings == 10
    assert restored.catalog.captions(clip)[0].text == "a cat meows"
    assert restored.load_clip(clip).shape == ws.load_clip(clip).shape
    with pytest.raises(FileExistsError):
        restore(out, tmp_path / "restored")


def test_restore_refuses_unsafe_archives(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("catalog.db", b"")
        zf.writestr("../escape.txt", b"x")
    with pytest.raises(ValueError, match="unsafe"):
        restore(evil, tmp_path / "t")
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("hello.txt", b"x")
    with pytest.raises(ValueError, match="not a Hearsay backup"):
        restore(plain, tmp_path / "t2")
