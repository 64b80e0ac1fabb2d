"""The bundled demo comes with the embedded teacher's captions (assets/demo/teacher_captions.jsonl).

seed_demo restores them as teacher captions, pending review, so a first search already fuses captions
(visitors cannot run a teacher) and Review has work. The file must match the teacher that ships: when
the embedded teacher changes, `python scripts/demo_captions.py` regenerates it, and the last test here
fails until it does.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.pipeline import captioning
from core.pipeline.importer import DEMO_CAPTIONS, import_paths, seed_demo
from core.store.settings import ASSETS
from tests.conftest import tone

DEMO_FILE = ASSETS / "demo" / DEMO_CAPTIONS


def test_the_seeded_demo_has_the_teachers_captions_pending_review(ws):
    assert seed_demo(ws).count("imported") == 81
    outputs = captioning.read_outputs(DEMO_FILE)
    clips = ws.catalog.clips()
    assert len(clips) == 82 and ws.catalog.uncaptioned_clip_ids() == []
    for clip in clips:
        (caption,) = ws.catalog.captions(clip.id)             # one version: the teacher's, nothing else
        assert caption.origin == "teacher" and caption.teacher == "embedded" and caption.annotator is None
        expected = outputs[caption.cache_key]
        assert caption.cache_key.startswith(ws.clip_key(clip) + "|")      # made for this very audio window
        assert (caption.text, caption.tags, caption.prompt) == (expected.caption, expected.tags, expected.prompt)
        assert ws.catalog.get_review(clip.id).status == "pending"
    dog = next(c for c in clips
               if ws.catalog.get_recording(c.recording_id).original_name.endswith("ovos_animals__dog.flac"))
    assert "dog" in ws.catalog.captions(dog.id)[0].text
    assert seed_demo(ws) is None and len(ws.catalog.clips()) == 82      # a workspace with clips is left alone


def test_restore_fills_only_uncaptioned_windows_and_skips_bad_lines(ws, tmp_path):
    import soundfile as sf
    folder = tmp_path / "clips"
    folder.mkdir()
    for name, freq in (("a.wav", 440.0), ("b.wav", 880.0), ("c.wav", 1320.0)):
        sf.write(folder / name, tone(1.0, freq), 16_000)
    import_paths(ws, [folder])
    by_name = {ws.catalog.get_recording(c.recording_id).original_name: c for c in ws.catalog.clips()}
    ws.catalog.add_caption(by_name["b.wav"].id, "my own words", "annotator", annotator="ann")
    key = {n: f"{ws.clip_key(c)}|embedded:test|0" for n, c in by_name.items()}
    other_window = key["c.wav"].replace(":0.000-", ":0.500-")
    def line(k, caption, **more):
        return json.dumps({"key": k, "output": {"caption": caption, "teacher": "embedded", **more}})
    lines = [line(key["a.wav"], "a beep", tags={"Beep, bleep": 0.9}), line(key["b.wav"], "not over mine"),
             line(other_window, "another window"),
             "{not json", json.dumps({"key": 7, "output": {}}), json.dumps({"output": {"caption": "no key"}})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    outputs = captioning.read_outputs(tmp_path / "t.jsonl")
    assert sorted(o.caption for o in outputs.values()) == ["a beep", "another window", "not over mine"]
    assert captioning.restore_outputs(ws, outputs) == 1
    assert [c.text for c in ws.catalog.captions(by_name["a.wav"].id)] == ["a beep"]
    assert [c.text for c in ws.catalog.captions(by_name["b.wav"].id)] == ["my own words"]   # never overwritten
    assert ws.catalog.captions(by_name["c.wav"].id) == []                  # a key for another window
    assert captioning.restore_outputs(ws, outputs) == 0                   # twice: nothing added


def test_the_demo_captions_are_what_the_shipped_teacher_says_now(ws):
    """Stale file check: the embedded teacher (model, prompt) finds every restored caption already done,
    so it runs nothing. If this fails, run scripts/demo_captions.py."""
    from core.models.teachers import get_teacher
    seed_demo(ws)
    clips = [c.id for c in ws.catalog.clips()]
    report = captioning.caption_clips(ws, clips, get_teacher("embedded", ws.settings))
    assert (report.skipped, report.captioned, report.reused, report.failed) == (82, 0, 0, 0), report.summary()
    written = captioning.write_outputs(ws, clips, Path(ws.root) / "again.jsonl")
    assert written == 82 and (Path(ws.root) / "again.jsonl").read_text() == DEMO_FILE.read_text()
