"""Export with provenance and audio (jsonl, csv, HF datasets) and the round trip into a new workspace."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from core.pipeline import review
from core.pipeline.export import IMPORT_ACTOR, export, import_export
from core.store.workspace import Workspace
from tests.conftest import tone
from tests.test_review import make_clips


@pytest.fixture
def reviewed(ws, tmp_path):
    """Five clips: accepted, edited (twice, by two people), rejected with a reason, skipped, pending."""
    cat = ws.catalog
    ids = make_clips(ws, tmp_path)
    review.accept(cat, ids[0], "alice", 0)
    v = review.edit(cat, ids[1], "alice", "a low hum", 0).review.version
    review.edit(cat, ids[1], "bob", "a low electrical hum", v)
    review.reject(cat, ids[2], "bob", 0, reason="clipped")
    review.skip(cat, ids[3], "alice", 0)
    return ws


def snapshot(ws: Workspace) -> dict:
    """What must survive a round trip, keyed by the exported clip's identity (not by ids)."""
    out = {}
    for clip in ws.catalog.clips():
        rec = ws.catalog.get_recording(clip.recording_id)
        key = rec.meta.get("exported_clip", {}).get("clip_key") or ws.clip_key(clip)
        item = review.load_item(ws.catalog, clip.id)
        cap = item.caption
        out[key] = {
            "status": item.review.status, "annotator": item.review.annotator, "reason": item.review.reason,
            "version": item.review.version, "updated": item.review.updated,
            "caption": (cap.text, cap.origin, cap.teacher, cap.model, cap.prompt, cap.annotator, cap.tags,
                        cap.confidence, cap.created),
            "captions": [c.text for c in item.captions],
            "events": [(e.annotator, e.action, e.after["status"], e.created)
                       for e in ws.catalog.review_events(clip.id)],
            "source": rec.source, "name": rec.original_name,
        }
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "hf"])
def test_round_trip_restores_the_same_reviews(reviewed, tmp_path, settings, fmt):
    out = tmp_path / f"export-{fmt}"
    report = export(reviewed, out, fmt)
    assert report.count == 5 and not report.errors
    fresh = Workspace(tmp_path / f"fresh-{fmt}", settings)
    restored = import_export(fresh, out, keep_authors=True)
    assert (restored.imported, restored.duplicates, restored.errors) == (5, 0, [])
    before, after = snapshot(reviewed), snapshot(fresh)
    assert after == before
    # the audio is the same window, sample for sample (16-bit)
    clip = fresh.catalog.clips()[0]
    key = fresh.catalog.get_recording(clip.recording_id).meta["exported_clip"]["clip_key"]
    original = next(c for c in reviewed.catalog.clips() if reviewed.clip_key(c) == key)
    assert np.allclose(fresh.load_clip(clip), reviewed.load_clip(original), atol=2 / 32768)
    # importing again changes nothing
    again = import_export(fresh, out, keep_authors=True)
    assert (again.imported, again.duplicates) == (0, 5) and snapshot(fresh) == before


def test_jsonl_and_csv_layouts(reviewed, tmp_path):
    export(reviewed, tmp_path / "j", "jsonl")
    lines = [json.loads(x) for x in (tmp_path / "j" / "metadata.jsonl").read_text().splitlines()]
    edited = next(r for r in lines if r["status"] == "edited")
    assert edited["caption"] == "a low electrical hum" and edited["caption_annotator"] == "bob"
    assert edited["caption_origin"] == "annotator" and len(edited["history"]["events"]) == 2
    accepted = next(r for r in lines if r["status"] == "accepted")
    assert (accepted["teacher"], accepted["model"], accepted["prompt"]) == ("embedded", "yamnet-test", "composer v1")
    assert all((tmp_path / "j" / r["file_name"]).is_file() for r in lines)
    export(reviewed, tmp_path / "c", "csv", statuses=["accepted", "edited"])
    import csv
    rows = list(csv.DictReader(open(tmp_path / "c" / "meta.csv", encoding="utf-8")))
    assert sorted(r["status"] for r in rows) == ["accepted", "edited"]
    assert all((tmp_path / "c" / "audio" / r["filename"]).is_file() for r in rows)   # the labelled-folder layout
    assert len(list((tmp_path / "c" / "audio").iterdir())) == 2


def test_hf_export_loads_with_datasets(reviewed, tmp_path):
    import datasets
    export(reviewed, tmp_path / "hf", "hf")
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(ds) == 5 and isinstance(ds.features["audio"], datasets.Audio)
    assert ds.features["audio"].sampling_rate == 16_000
    row = ds.cast_column("audio", datasets.Audio(decode=False))[0]
    wave, sr = sf.read(io.BytesIO(row["audio"]["bytes"]))
    assert sr == 16_000 and len(wave) == 16_000
    assert set(ds["status"]) == {"accepted", "edited", "rejected", "skipped", "pending"}


def test_export_never_overwrites(reviewed, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export(reviewed, target, "jsonl")
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".busy")]    # no scratch left behind


def test_cli_export_and_import(reviewed, tmp_path, capsys):
    from core.__main__ import main
    out = tmp_path / "cli-export"
    assert main(["--workspace", str(reviewed.root), "export", "--format", "jsonl", str(out)]) == 0
    assert "exported 5 clips" in capsys.readouterr().out
    fresh = tmp_path / "cli-fresh"
    assert main(["import-export", str(out), "--workspace", str(fresh)]) == 0
    assert "restored 5 clips" in capsys.readouterr().out
    assert main(["review-stats", "--json", "--workspace", str(fresh)]) == 0
    stats = json.loads(capsys.readouterr().out)
    # by default the import is recorded as the import's own act; the original names are provenance
    assert stats["reviewed"] == 3 and set(stats["by_annotator"]) == {IMPORT_ACTOR}
    kept = tmp_path / "cli-kept"
    assert main(["import-export", str(out), "--keep-authors", "--workspace", str(kept)]) == 0
    capsys.readouterr()
    assert main(["review-stats", "--json", "--workspace", str(kept)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["reviewed"] == 3 and stats["by_annotator"]["bob"] == {"edited": 1, "rejected": 1}


def test_zipped_export_imports_and_zip_slip_is_refused(reviewed, tmp_path, settings):
    import shutil
    import zipfile

    from core.pipeline.export import extract_zip
    export(reviewed, tmp_path / "zipped", "csv")
    archive = shutil.make_archive(str(tmp_path / "upload"), "zip", tmp_path, "zipped")   # as the UI offers it
    src = extract_zip(archive, tmp_path / "unpacked")
    fresh = Workspace(tmp_path / "from-zip", settings)
    assert import_export(fresh, src, keep_authors=True).imported == 5 and snapshot(fresh) == snapshot(reviewed)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped.txt", "no")
    with pytest.raises(ValueError, match="zip-slip"):
        extract_zip(evil, tmp_path / "evil")
    assert not (tmp_path / "escaped.txt").exists()


# -- issue 13: review import reads only the export's own files (D2), never forges authors (D3),
#    and a zipped export cannot be a bomb (D6) ---------------------------------------------------------

def _jsonl_export(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"caption": "a tone", "original_name": "x.flac", **r}) + "\n")
    return folder


def _flac(path, freq=440.0, seconds=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, freq), 16_000, format="FLAC")
    return path


def test_review_import_reads_nothing_outside_the_export(ws, tmp_path):
    outside = _flac(tmp_path / "secret" / "outside.flac", 330)
    src = tmp_path / "exp"
    _flac(src / "audio" / "inside.flac", 550)
    (src / "audio" / "link.flac").symlink_to(outside)
    (src / "audio" / "zero.flac").symlink_to("/dev/zero")
    names = [str(outside), "../secret/outside.flac", "audio/../../secret/outside.flac", "audio/link.flac",
             "audio/zero.flac", "/dev/zero", "/no/such/file.flac", "../no-such.flac", "audio/inside.flac"]
    _jsonl_export(src, [{"file_name": n} for n in names])
    report = import_export(ws, src)
    assert report.imported == 1, report.errors
    assert len(report.errors) == len(names) - 1
    # one message for all: whether the target exists is not revealed
    assert {e.split(": ", 1)[1] for e in report.errors} == {"refused: the audio path points outside the export"}
    assert [r.original_name for r in ws.catalog.recordings()] == ["x.flac"]


def test_csv_review_import_refuses_paths_outside_the_export(ws, tmp_path):
    import csv
    outside = _flac(tmp_path / "outside.flac", 330)
    src = tmp_path / "exp"
    (src / "audio").mkdir(parents=True)
    with open(src / "meta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "caption"])
        w.writerow(["../../outside.flac", "x"])
        w.writerow([str(outside), "y"])
    report = import_export(ws, src)
    assert report.imported == 0 and len(report.errors) == 2
    assert all("outside the export" in e for e in report.errors)


def test_review_import_refuses_special_and_oversized_files_inside(tmp_path):
    import os

    from core.store.settings import load_settings
    small = load_settings(workspace=tmp_path / "w", max_upload_mb=0.05)
    ws = Workspace(small.workspace, small)
    src = tmp_path / "exp"
    _flac(src / "audio" / "ok.flac", 440, 0.5)
    sf.write(src / "audio" / "big.wav", tone(3.0), 16_000, subtype="FLOAT")      # 192 kB > 50 kB
    os.mkfifo(src / "audio" / "pipe.flac")                                       # would block a plain read
    _jsonl_export(src, [{"file_name": f"audio/{n}"} for n in ("ok.flac", "big.wav", "pipe.flac")])
    report = import_export(ws, src)
    assert report.imported == 1
    assert any("big.wav" in e and "limit" in e for e in report.errors), report.errors
    assert any("pipe.flac" in e and "not a regular file" in e for e in report.errors), report.errors


def test_bad_lines_are_reported_and_the_rest_restored(ws, tmp_path):
    src = tmp_path / "exp"
    _flac(src / "audio" / "a.flac")
    _jsonl_export(src, [{"file_name": "audio/a.flac"}])
    with open(src / "metadata.jsonl", "a") as fh:
        fh.write("{not json\n")
        fh.write("[1, 2]\n")
        fh.write(json.dumps({"caption": "no file"}) + "\n")
    report = import_export(ws, src)
    assert report.imported == 1 and len(report.errors) == 3, report.errors
    assert any("line 2" in e for e in report.errors)


def _forged(tmp_path):
    """A record claiming alice accepted her own caption in 2020, at version 7, with an overlap decision."""
    src = tmp_path / "forged"
    _flac(src / "audio" / "a.flac")
    old = "2020-01-01T00:00:00+00:00"
    review_state = {"status": "accepted", "caption_id": 5, "annotator": "alice", "reason": "sounds right",
                    "version": 7, "updated": old}
    history = {
        "captions": [{"id": 4, "text": "a tone", "origin": "teacher", "teacher": "embedded", "annotator": None,
                      "created": old},
                     {"id": 5, "text": "alice's words", "origin": "annotator", "annotator": "alice", "created": old}],
        "review": review_state,
        "events": [{"annotator": "alice", "action": "edit", "created": old,
                    "before": {"status": "pending", "caption_id": 4, "version": 6},
                    "after": dict(review_state, status="edited")},
                   {"annotator": "alice", "action": "accept", "created": old,
                    "before": dict(review_state, status="edited"), "after": review_state}],
        "annotations": [{"annotator": "carol", "status": "rejected", "caption_id": 4, "action": "reject",
                         "created": old}],
    }
    return _jsonl_export(src, [{"file_name": "audio/a.flac", "status": "accepted", "annotator": "alice",
                                "review_version": 7, "review_updated": old, "history": history}])


def test_review_import_records_the_importer_not_the_claimed_authors(ws, tmp_path):
    report = import_export(ws, _forged(tmp_path), importer="bob")
    assert report.imported == 1, report.errors
    cat = ws.catalog
    [clip] = cat.clips()
    r = cat.get_review(clip.id)
    assert (r.status, r.annotator) == ("accepted", "bob")
    assert r.version == 2 and not r.updated.startswith("2020")          # the catalogue's own: two saves here
    assert "imported; originally" in r.reason and "alice" in r.reason and "2020-01-01" in r.reason
    assert "sounds right" in r.reason
    events = cat.review_events(clip.id)
    assert [(e.annotator, e.after["version"]) for e in events] == [("bob", 1), ("bob", 2)]
    assert all(not e.created.startswith("2020") and e.after["annotator"] == "bob" for e in events)
    captions = cat.captions(clip.id)
    assert [c.annotator for c in captions] == [None, "bob"] and r.caption_id == captions[1].id
    assert all(not c.created.startswith("2020") for c in captions)
    [note] = cat.annotations(clip.id)
    assert note.annotator == "bob" and "carol" in note.reason and note.caption_id == captions[0].id
    assert "alice" not in json.dumps(cat.review_tallies()) and cat.event_tallies() == {"bob": 2}
    # the original names and times stay readable as provenance
    provenance = json.dumps(cat.get_recording(clip.recording_id).meta)
    assert "alice" in provenance and "2020-01-01" in provenance
    # bob can undo what he imported: it is his
    assert review.undo(cat, clip.id, "bob", r.version).review.status == "edited"


def test_review_import_without_a_name_is_recorded_as_the_import(ws, tmp_path):
    import_export(ws, _forged(tmp_path))
    [clip] = ws.catalog.clips()
    assert ws.catalog.get_review(clip.id).annotator == IMPORT_ACTOR


def test_keep_authors_restores_the_original_identities(ws, tmp_path):
    import_export(ws, _forged(tmp_path), importer="root", keep_authors=True)
    [clip] = ws.catalog.clips()
    r = ws.catalog.get_review(clip.id)
    assert (r.annotator, r.version, r.updated) == ("alice", 7, "2020-01-01T00:00:00+00:00")


def test_zipped_export_bomb_is_refused_before_writing(tmp_path):
    import zipfile

    from core.pipeline.export import extract_zip
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("exp/metadata.jsonl", "{}\n")
        zf.writestr("exp/audio/zeros.flac", bytes(4 << 20))
    with pytest.raises(ValueError, match="limit"):
        extract_zip(bomb, tmp_path / "out", max_mb=1)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_review_tab_import_passes_the_signed_in_importer(ws, tmp_path):
    """The Review tab's import records the signed-in annotator; only an admin keeps the export's names."""
    import shutil

    from gradio.context import LocalContext

    from app import build_app
    from core.auth.access import AccessPolicy, parse_users
    from ui.state import AppState
    archive = shutil.make_archive(str(tmp_path / "forged"), "zip", tmp_path, _forged(tmp_path).name)
    demo = build_app(AppState(ws.settings), AccessPolicy(parse_users("ann:pw1:admin,bob:pw2:annotator")))
    block_fn = next(f for f in demo.fns.values() if f.api_name == "review_import")

    class Request:
        def __init__(self, username):
            self.username = username

    def upload_as(user):
        request = Request(user)
        token = LocalContext.request.set(request)
        try:
            return block_fn.fn(None, archive, request, progress=lambda *a, **k: None)
        finally:
            LocalContext.request.reset(token)

    assert "restored 1" in upload_as("bob")
    [clip] = ws.catalog.clips()
    assert ws.catalog.get_review(clip.id).annotator == "bob"
    ws.catalog.delete_clips([clip.id])
    assert "restored 1" in upload_as("ann")
    [clip] = ws.catalog.clips()
    assert ws.catalog.get_review(clip.id).annotator == "alice"


def test_datasets_export_may_not_name_arrow_files_outside(reviewed, tmp_path):
    out = tmp_path / "hf"
    export(reviewed, out, "hf")
    state = json.loads((out / "state.json").read_text())
    state["_data_files"] = [{"filename": "../elsewhere.arrow"}]
    (out / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="outside the export"):
        import_export(Workspace(tmp_path / "fresh", reviewed.settings), out)
