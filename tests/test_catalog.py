"""The catalogue: migrations, transactions, append-only captions, optimistic review versions."""
from __future__ import annotations

import sqlite3

import pytest

from core.store.catalog import MIGRATIONS, Catalog, ClipQuery, ConflictError


def add(cat: Catalog, sha="a" * 64, windows=((0.0, 10.0), (9.0, 19.0)), **kw):
    rec, created = cat.add_recording(sha256=sha, original_name=kw.pop("name", "x.wav"), source="test",
                                     duration=19.0, sample_rate=44_100, windows=windows, meta={"label": "dog"}, **kw)
    return rec, created


def test_schema_is_migrated_and_wal(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    assert cat.schema_version == len(MIGRATIONS)
    with sqlite3.connect(tmp_path / "c.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    Catalog(tmp_path / "c.db")          # re-opening migrates nothing and keeps data
    assert Catalog(tmp_path / "c.db").schema_version == len(MIGRATIONS)


def test_refuses_newer_schema(tmp_path):
    Catalog(tmp_path / "c.db")
    with sqlite3.connect(tmp_path / "c.db") as db:
        db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        Catalog(tmp_path / "c.db")


def test_recording_with_clips_is_one_transaction(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    rec, created = add(cat)
    assert created and [(c.start, c.end) for c in cat.clips(rec.id)] == [(0.0, 10.0), (9.0, 19.0)]
    again, created = add(cat)
    assert not created and again.id == rec.id
    # a failing insert (duplicate window) leaves no recording behind
    with pytest.raises(sqlite3.IntegrityError):
        add(cat, sha="b" * 64, windows=((0.0, 1.0), (0.0, 1.0)))
    assert len(cat.recordings()) == 1


def test_captions_are_append_only_and_current_follows_review(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    rec, _ = add(cat)
    clip = cat.clips(rec.id)[0]
    first = cat.add_caption(clip.id, "a dog barks", "teacher", teacher="embedded", model="yamnet",
                            prompt="v1", tags={"Dog": 0.9}, confidence=0.8, cache_key="k1")
    second = cat.add_caption(clip.id, "a dog barks twice", "teacher", teacher="embedded", cache_key="k2")
    assert [c.text for c in cat.captions(clip.id)] == ["a dog barks", "a dog barks twice"]
    assert cat.current_captions()[clip.id].id == second.id
    assert cat.cached_caption("k1").tags == {"Dog": 0.9}
    cat.save_review(clip.id, status="accepted", expected_version=0, annotator="ann", caption_id=first.id)
    assert cat.current_captions()[clip.id].id == first.id
    assert cat.uncaptioned_clip_ids() == [cat.clips(rec.id)[1].id]


def test_review_versions_detect_concurrent_edits(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    rec, _ = add(cat)
    clip = cat.clips(rec.id)[0]
    cat.add_caption(clip.id, "a dog", "teacher")
    alice = cat.save_review(clip.id, status="edited", expected_version=0, annotator="alice",
                            new_text="a small dog barks")
    with pytest.raises(ConflictError) as err:
        cat.save_review(clip.id, status="rejected", expected_version=0, annotator="bob", reason="noise")
    assert err.value.current.annotator == "alice" and err.value.current.version == 1
    assert cat.get_caption(alice.caption_id).text == "a small dog barks"
    events = cat.review_events(clip.id)
    assert [e.action for e in events] == ["edited"] and events[0].before["status"] == "pending"
    bob = cat.save_review(clip.id, status="rejected", expected_version=1, annotator="bob", reason="noise")
    assert bob.version == 2 and len(cat.review_events(clip.id)) == 2


def test_clip_rows_filter_and_page(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    add(cat, sha="a" * 64, name="dog.wav")
    rec, _ = add(cat, sha="b" * 64, name="cat.wav", windows=((0.0, 3.0),))
    cat.add_caption(cat.clips(rec.id)[0].id, "a cat meows", "teacher")
    rows, total = cat.clip_rows(ClipQuery(text="meow"))
    assert total == 1 and rows[0].recording.original_name == "cat.wav" and rows[0].caption.text == "a cat meows"
    assert cat.clip_rows(ClipQuery(status="uncaptioned"))[1] == 2
    rows, total = cat.clip_rows(ClipQuery(limit=2, offset=2))
    assert total == 3 and len(rows) == 1


def test_delete_cascades_and_reports_orphan_recordings(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    rec, _ = add(cat)
    first, second = cat.clips(rec.id)
    cat.add_caption(first.id, "x", "teacher")
    cat.save_review(first.id, status="accepted", expected_version=0, annotator="a")
    assert cat.delete_clips([first.id]) == []           # recording still has a clip
    assert cat.captions(first.id) == [] and cat.get_review(first.id).version == 0
    assert cat.delete_clips([second.id]) == [rec.sha256]
    assert cat.recordings() == []


def test_models_runs_and_kv(tmp_path):
    cat = Catalog(tmp_path / "c.db")
    cat.register_model("m1", "/x/m1")
    cat.register_model("m2", "/x/m2", metrics={"r1": 0.5})
    cat.set_active_model("m2")
    assert cat.active_model().id == "m2" and not cat.get_model("m1").active
    with pytest.raises(KeyError):
        cat.set_active_model("nope")
    run = cat.add_run({"epochs": 2})
    assert cat.update_run(run.id, status="running", pid=123).status == "running"
    with pytest.raises(sqlite3.IntegrityError):
        cat.update_run(run.id, status="exploded")
    cat.set_value("guidelines", "# be kind")
    assert cat.get_value("guidelines") == "# be kind" and cat.get_value("missing", "d") == "d"


def test_model_and_run_paths_under_the_root_are_stored_relative(tmp_path):
    root = tmp_path / "ws"
    cat = Catalog(root / "catalog.db")
    cat.register_model("mine", str(root / "models" / "mine"))
    cat.register_model("shipped", "/opt/hearsay/assets/student")       # outside the workspace: kept as it is
    run = cat.add_run({}, dir=str(root / "runs" / "run-0001"))
    with sqlite3.connect(root / "catalog.db") as db:
        assert dict(db.execute("SELECT id, path FROM models")) == {"mine": "models/mine",
                                                                   "shipped": "/opt/hearsay/assets/student"}
        assert db.execute("SELECT dir FROM runs").fetchone()[0] == "runs/run-0001"
    assert cat.get_model("mine").path == str(root.resolve() / "models" / "mine")
    assert cat.get_model("shipped").path == "/opt/hearsay/assets/student"
    assert cat.get_run(run.id).dir == str(root.resolve() / "runs" / "run-0001")
    assert cat.update_run(run.id, dir=str(root / "runs" / "run-0002")).dir == str(root.resolve() / "runs" / "run-0002")
    assert cat.add_run({}).dir == ""


def test_migration_makes_old_absolute_paths_relative(tmp_path):
    root = tmp_path / "copy"
    (root / "models" / "copied").mkdir(parents=True)
    cat = Catalog(root / "catalog.db")
    cat.close()
    with sqlite3.connect(root / "catalog.db") as db:             # a v2 catalogue, as an older Hearsay wrote it
        db.executemany("INSERT INTO models(id, path, created) VALUES(?, ?, '')", [
            ("inside", str(root / "models" / "inside")),
            ("copied", "/old/place/ws/models/copied"),           # the original workspace's copy of models/copied
            ("elsewhere", "/data/models/elsewhere"),             # a folder this workspace does not hold
        ])
        db.execute("INSERT INTO runs(dir, created, updated) VALUES(?, '', '')", ("/old/place/ws/runs/run-0001",))
        db.execute("PRAGMA user_version=2")
    (root / "runs" / "run-0001").mkdir(parents=True)
    cat = Catalog(root / "catalog.db")
    assert cat.schema_version == len(MIGRATIONS)
    with sqlite3.connect(root / "catalog.db") as db:
        assert dict(db.execute("SELECT id, path FROM models")) == {
            "inside": "models/inside", "copied": "models/copied", "elsewhere": "/data/models/elsewhere"}
        assert db.execute("SELECT dir FROM runs").fetchone()[0] == "runs/run-0001"
