"""`doctor` on a deliberately damaged workspace; backup → restore round trip."""
from __future__ import annotations

import zipfile

import pytest

from core.ops.backup import backup, restore
from core.ops.doctor import doctor


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


# -- D1: backup never writes into the workspace it reads, and cleans up after itself ----------------------

def _partials(folder):
    return [p for p in folder.rglob("*.partial")]


def test_backup_refuses_an_output_inside_the_workspace(demo_ws, capsys):
    from core.__main__ import main
    from core.ops.backup import BackupError
    with pytest.raises(BackupError, match="inside the workspace"):
        backup(demo_ws, demo_ws.root / "inner.zip")
    with pytest.raises(BackupError, match="inside the workspace"):
        backup(demo_ws, demo_ws.models_dir / "sub" / "inner.zip")
    assert not (demo_ws.root / "inner.zip").exists() and not _partials(demo_ws.root)
    assert main(["backup", str(demo_ws.root / "inner.zip"), "--workspace", str(demo_ws.root)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inside the workspace" in err and "Traceback" not in err


def test_backup_leaves_out_partial_files(demo_ws, tmp_path):
    (demo_ws.models_dir / "old.partial").write_bytes(b"x" * 1000)       # a leftover from an earlier failure
    names = zipfile.ZipFile(backup(demo_ws, tmp_path / "b.zip")).namelist()
    assert not any(n.endswith(".partial") for n in names)
    assert not list(tmp_path.glob("*.partial"))


def test_backup_checks_free_space_first(demo_ws, tmp_path, monkeypatch):
    import shutil as real_shutil
    from core.ops import backup as backup_module
    usage = real_shutil.disk_usage(tmp_path)
    monkeypatch.setattr(backup_module.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(backup_module.BackupError, match="free"):
        backup(demo_ws, tmp_path / "b.zip")
    assert not (tmp_path / "b.zip").exists() and not _partials(tmp_path)


def test_backup_deletes_its_partial_file_when_writing_fails(demo_ws, tmp_path, monkeypatch):
    real_write = zipfile.ZipFile.write
    calls = []

    def failing_write(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", failing_write)
    with pytest.raises(OSError, match="No space"):
        backup(demo_ws, tmp_path / "b.zip")
    assert not (tmp_path / "b.zip").exists() and not _partials(tmp_path)


# -- D4: a lost or truncated catalogue is reported, never "repaired" ---------------------------------------

def _close_catalogue(ws) -> None:
    import gc
    ws.catalog.close()
    gc.collect()        # connections of finished import threads: closing them later would write the file back


def _drop_catalogue(ws, how: str) -> None:
    _close_catalogue(ws)
    for suffix in ("-wal", "-shm"):
        (ws.root / f"catalog.db{suffix}").unlink(missing_ok=True)
    db = ws.root / "catalog.db"
    if how == "missing":
        db.unlink()
    else:
        db.write_bytes(b"")


def _audio_files(ws):
    return sorted(ws.audio_dir.rglob("*.flac"))


@pytest.mark.parametrize("how", ["missing", "zero-length"])
def test_workspace_with_audio_but_no_catalogue_is_not_reinitialised(demo_ws, how):
    from core.store.catalog import CatalogLost
    from core.store.workspace import Workspace
    _drop_catalogue(demo_ws, how)
    with pytest.raises(CatalogLost, match="restore"):
        Workspace(demo_ws.root, demo_ws.settings)
    db = demo_ws.root / "catalog.db"
    assert (not db.exists()) if how == "missing" else db.stat().st_size == 0     # no fresh schema written


def test_a_new_workspace_folder_still_initialises(tmp_path, settings):
    from core.store.workspace import Workspace
    ws = Workspace(tmp_path / "brand-new", settings)
    assert ws.catalog.stats().recordings == 0 and (ws.root / "catalog.db").stat().st_size > 0


def test_doctor_repair_refuses_a_zero_length_catalogue(demo_ws, capsys):
    from core.__main__ import main
    before = _audio_files(demo_ws)
    _drop_catalogue(demo_ws, "zero-length")
    rc = main(["doctor", "--repair", "--no-index", "--workspace", str(demo_ws.root)])
    out = capsys.readouterr()
    assert rc != 0 and "restore" in out.out and "healthy" not in out.out.splitlines()
    assert "Traceback" not in out.out + out.err
    assert _audio_files(demo_ws) == before and not (demo_ws.root / "lost+found").exists()


def test_doctor_never_moves_the_library_out_of_an_empty_catalogue(demo_ws):
    from core.store.catalog import Catalog
    from core.store.workspace import Workspace
    before = _audio_files(demo_ws)
    _drop_catalogue(demo_ws, "missing")
    Catalog(demo_ws.root / "catalog.db").close()          # e.g. an older Hearsay re-created an empty schema
    ws = Workspace(demo_ws.root, demo_ws.settings)
    report = doctor(ws, repair=True, check_index=False)
    orphan = next(f for f in report.findings if f.check == "orphan audio")
    assert not orphan.ok and not orphan.repaired and "restore" in orphan.detail
    assert not report.healthy
    assert _audio_files(demo_ws) == before and not (demo_ws.root / "lost+found").exists()


def test_doctor_reports_a_truncated_catalogue(demo_ws, capsys):
    from core.__main__ import main
    from core.store.workspace import Workspace
    before = _audio_files(demo_ws)
    with demo_ws.catalog.transaction() as db:           # enough rows that 8 KiB cuts through the tables
        db.executemany("INSERT INTO kv(key, value) VALUES(?, ?)", [(f"k{i}", "v" * 200) for i in range(300)])
    _close_catalogue(demo_ws)
    import sqlite3
    con = sqlite3.connect(demo_ws.root / "catalog.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with open(demo_ws.root / "catalog.db", "r+b") as fh:
        fh.truncate(8192)
    report = doctor(Workspace(demo_ws.root, demo_ws.settings), repair=True, check_index=False)
    assert not report.healthy and "restore" in report.text()
    rc = main(["doctor", "--repair", "--no-index", "--workspace", str(demo_ws.root)])
    out = capsys.readouterr()
    assert rc != 0 and "restore" in out.out and "Traceback" not in out.out + out.err
    assert _audio_files(demo_ws) == before and not (demo_ws.root / "lost+found").exists()


def test_cli_commands_turn_a_lost_catalogue_into_one_line(demo_ws, capsys):
    from core.__main__ import main
    _drop_catalogue(demo_ws, "missing")
    assert main(["stats", "--workspace", str(demo_ws.root)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "restore" in err
    assert not (demo_ws.root / "catalog.db").exists()


def test_app_refuses_to_start_on_a_lost_catalogue(demo_ws):
    import app
    _drop_catalogue(demo_ws, "zero-length")
    with pytest.raises(SystemExit) as exc:
        app.main(["--workspace", str(demo_ws.root)])
    assert "restore" in str(exc.value.code)
    assert (demo_ws.root / "catalog.db").stat().st_size == 0       # and nothing was seeded into it


# -- D18: leftovers of killed imports ----------------------------------------------------------------------

def test_doctor_reports_and_removes_stale_import_folders(ws):
    import os
    import time
    stale = ws.cache_dir / "import-abc123"
    (stale / "unzipped").mkdir(parents=True)
    (stale / "unzipped" / "a.wav").write_bytes(b"x" * 100)
    old = time.time() - 2 * 3600
    for p in (stale / "unzipped" / "a.wav", stale / "unzipped", stale):
        os.utime(p, (old, old))
    busy = ws.cache_dir / "import-running"          # a recent one may belong to an import in progress
    busy.mkdir()
    report = doctor(ws, check_index=False)
    finding = next(f for f in report.findings if f.check == "import leftovers")
    assert not finding.ok and "1 " in finding.detail
    repaired = doctor(ws, repair=True, check_index=False)
    assert next(f for f in repaired.findings if f.check == "import leftovers").repaired
    assert not stale.exists() and busy.exists()
    assert doctor(ws, check_index=False).healthy


# -- D13 / D14: restore ------------------------------------------------------------------------------------

def _backup_with_model_and_run(ws, tmp_path):
    model = ws.models_dir / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"w")
    ws.catalog.register_model("my-model", str(model))
    run = ws.catalog.add_run({"epochs": 1})
    ws.catalog.update_run(run.id, dir=str(ws.runs_dir / "run-0001"), status="finished")
    (ws.runs_dir / "run-0001").mkdir()
    (ws.runs_dir / "run-0001" / "log.txt").write_text("trained")
    return backup(ws, tmp_path / "b.zip"), run.id


def test_restored_copy_points_at_its_own_files_and_gets_a_new_id(demo_ws, tmp_path):
    import shutil
    from core.pipeline import index
    original_id = index.workspace_id(demo_ws)
    archive, run_id = _backup_with_model_and_run(demo_ws, tmp_path)
    shutil.move(demo_ws.root, tmp_path / "moved-away")              # the original is gone
    restored = restore(archive, tmp_path / "copy")
    assert restored.catalog.get_model("my-model").path == str(restored.models_dir / "my-model")
    assert restored.catalog.get_run(run_id).dir == str(restored.runs_dir / "run-0001")
    assert index.workspace_id(restored) != original_id
    assert doctor(restored, check_index=False).healthy


def test_restore_of_an_older_backup_with_absolute_paths(demo_ws, tmp_path):
    """Backups made before paths were stored relative hold the original's absolute paths."""
    import sqlite3
    archive, run_id = _backup_with_model_and_run(demo_ws, tmp_path)
    demo_ws.catalog.close()
    con = sqlite3.connect(demo_ws.root / "catalog.db")
    con.execute("UPDATE models SET path=?", (str(demo_ws.models_dir / "my-model"),))
    con.execute("UPDATE runs SET dir=?", (str(demo_ws.runs_dir / "run-0001"),))
    con.execute("PRAGMA user_version=2")
    con.commit()
    con.close()
    from core.store.workspace import Workspace
    old = backup(Workspace(demo_ws.root, demo_ws.settings), tmp_path / "old.zip")
    restored = restore(old, tmp_path / "copy")
    assert restored.catalog.get_model("my-model").path == str(restored.models_dir / "my-model")
    assert restored.catalog.get_run(run_id).dir == str(restored.runs_dir / "run-0001")


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, name)
            else:
                zf.writestr(name, data)
    return path


def _nothing_left_beside(target):
    return [p.name for p in target.parent.iterdir() if p.name.startswith(".") and target.name in p.name]


def test_restore_of_a_non_database_leaves_the_target_free(demo_ws, tmp_path, capsys):
    from core.__main__ import main
    target = tmp_path / "t"
    bad = _zip(tmp_path / "bad.zip", [("catalog.db", b"not a database at all" * 100), ("audio/ab/x.flac", b"x")])
    with pytest.raises(ValueError, match="not a Hearsay catalogue"):
        restore(bad, target)
    assert not target.exists() and not _nothing_left_beside(target)
    target.mkdir()                                         # an empty folder given by the user stays, empty
    assert main(["restore", str(bad), str(target)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a Hearsay catalogue" in err
    assert target.is_dir() and not any(target.iterdir()) and not _nothing_left_beside(target)
    good = backup(demo_ws, tmp_path / "good.zip")          # a retry into the same folder works
    assert restore(good, target).catalog.stats().recordings == 10


def test_restore_refuses_symlink_and_duplicate_entries(tmp_path):
    link = zipfile.ZipInfo("audio")
    link.external_attr = (0o120777 << 16)                  # a symbolic link entry pointing at /etc
    symlinked = _zip(tmp_path / "link.zip", [("catalog.db", b""), ("/etc", link)])
    with pytest.raises(ValueError, match="link"):
        restore(symlinked, tmp_path / "t1")
    assert not (tmp_path / "t1").exists()
    with pytest.warns(UserWarning):                        # zipfile itself warns about the duplicate
        duplicated = _zip(tmp_path / "dup.zip", [("catalog.db", b"a"), ("catalog.db", b"b")])
    with pytest.raises(ValueError, match="twice"):
        restore(duplicated, tmp_path / "t2")
    assert not (tmp_path / "t2").exists()


def test_a_restored_embedded_index_follows_the_new_id(demo_ws, tmp_path):
    from core.pipeline import index
    old_id = index.workspace_id(demo_ws)
    col = index.get_client(demo_ws).get_or_create_collection(f"hs-{old_id}-some-model", embedding_function=None)
    col.add(ids=["1"], embeddings=[[0.1, 0.2, 0.3]])
    restored = restore(backup(demo_ws, tmp_path / "b.zip", include_chroma=True), tmp_path / "copy")
    new_id = index.workspace_id(restored)
    assert new_id != old_id
    moved = index.get_client(restored).get_collection(f"hs-{new_id}-some-model")
    assert moved.count() == 1
