"""Export with provenance and audio (jsonl, csv, HF datasets) and the round trip into a new workspace."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from core import review
from core.export import export, import_export
from core.workspace import Workspace
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
    restored = import_export(fresh, out)
    assert (restored.imported, restored.duplicates, restored.errors) == (5, 0, [])
    before, after = snapshot(reviewed), snapshot(fresh)
    assert after == before
    # the audio is the same window, sample for sample (16-bit)
    clip = fresh.catalog.clips()[0]
    key = fresh.catalog.get_recording(clip.recording_id).meta["exported_clip"]["clip_key"]
    original = next(c for c in reviewed.catalog.clips() if reviewed.clip_key(c) == key)
    assert np.allclose(fresh.load_clip(clip), reviewed.load_clip(original), atol=2 / 32768)
    # importing again changes nothing
    again = import_export(fresh, out)
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
    assert stats["reviewed"] == 3 and stats["by_annotator"]["bob"] == {"edited": 1, "rejected": 1}


def test_zipped_export_imports_and_zip_slip_is_refused(reviewed, tmp_path, settings):
    import shutil
    import zipfile

    from core.export import extract_zip
    export(reviewed, tmp_path / "zipped", "csv")
    archive = shutil.make_archive(str(tmp_path / "upload"), "zip", tmp_path, "zipped")   # as the UI offers it
    src = extract_zip(archive, tmp_path / "unpacked")
    fresh = Workspace(tmp_path / "from-zip", settings)
    assert import_export(fresh, src).imported == 5 and snapshot(fresh) == snapshot(reviewed)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped.txt", "no")
    with pytest.raises(ValueError, match="zip-slip"):
        extract_zip(evil, tmp_path / "evil")
    assert not (tmp_path / "escaped.txt").exists()
