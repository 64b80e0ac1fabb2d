"""Batch captioning over the catalogue: cache, resume, failures, cancel; the CLI and the Captions tab."""
from __future__ import annotations

import threading

import pytest

from core.models import teachers
from core.pipeline.captioning import caption_clips, caption_rows, caption_selection, caption_versions, select_clips
from core.store.catalog import ClipQuery
from core.models.teachers.base import Teacher


class CountingTeacher(Teacher):
    """Fast and predictable: describes a clip by its length; refuses clips shorter than `refuse_below` s."""
    name, model_id, batch_size = "counting", "len-v1", 3

    def __init__(self, settings=None, prompt=None, refuse_below: float = 0.0, on_batch=None):
        self.prompt = prompt or "say the length"
        self.refuse_below, self.on_batch, self.seen = refuse_below, on_batch, []

    def caption(self, waves):
        self.seen += [len(w) for w in waves]
        if self.on_batch:
            self.on_batch(len(self.seen))
        if any(len(w) < self.refuse_below * 16000 for w in waves):
            raise ValueError("too short for this teacher")
        return [self.output(f"{len(w) / 16000:.2f} seconds of sound", tags={"length": len(w) / 16000 / 60},
                            confidence=0.5) for w in waves]


@pytest.fixture
def counting(monkeypatch):
    """Registers CountingTeacher as the teacher named "counting" (for the CLI and the tab)."""
    monkeypatch.setitem(teachers.BACKENDS, "counting", ("tests.test_captioning", "CountingTeacher"))
    teachers._cache.clear()
    yield
    teachers._cache.clear()


def test_embedded_end_to_end_with_cache_and_versions(demo_ws):
    ws = demo_ws
    ids = select_clips(ws, "uncaptioned")
    assert len(ids) == 10
    seen = []
    report = caption_selection(ws, "embedded", progress=lambda done, total, msg: seen.append((done, total)))
    assert (report.captioned, report.failed, report.total) == (10, 0, 10)
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    caps = ws.catalog.current_captions()
    assert len(caps) == 10
    dog = next(c for cid, c in caps.items() if ws.catalog.get_recording(ws.catalog.get_clip(cid).recording_id)
               .original_name.endswith("dog.flac"))
    assert "dog" in dog.text and dog.origin == "teacher" and dog.teacher == "embedded"
    assert dog.model.startswith("yamnet") and dog.prompt.startswith("composer-") and dog.cache_key
    assert dog.tags and 0 < dog.confidence <= 1
    # running again costs nothing and adds nothing
    again = caption_selection(ws, "embedded", selection="all")
    assert (again.captioned, again.skipped) == (0, 10)
    assert select_clips(ws, "uncaptioned", teacher=teachers.get_teacher("embedded", ws.settings)) == []
    # forcing adds a version, never replaces
    forced = caption_selection(ws, "embedded", selection=[dog.clip_id], force=True)
    assert forced.captioned == 1 and len(ws.catalog.captions(dog.clip_id)) == 2
    versions = caption_versions(ws, dog.clip_id)
    assert len(versions) == 2 and versions[0][0] > versions[1][0]
    rows, total = caption_rows(ws, ClipQuery(text="dog.flac"))
    assert total == 1 and rows[0][-1] == 2 and "dog" in rows[0][4]


def test_failures_are_recorded_and_the_batch_goes_on(ws, demo_ws):
    teacher = CountingTeacher(refuse_below=4.0)          # refuses the short clips only
    ids = demo_ws.catalog.clip_ids()
    lengths = {i: len(demo_ws.load_clip(i)) / 16000 for i in ids}
    short = {i for i, s in lengths.items() if s < 4.0}
    assert short and len(short) < len(ids)
    report = caption_clips(demo_ws, ids, teacher)
    assert report.failed == len(short) and report.captioned == len(ids) - len(short)
    assert {cid for cid, _ in report.failures} == short
    logged = demo_ws.catalog.caption_failures()
    assert {f["clip_id"] for f in logged} == short and all("too short" in f["error"] for f in logged)
    assert all(f["teacher"] == "counting:len-v1" for f in logged)
    # a clip whose audio cannot be read is a failure too, not a crash
    bad = demo_ws.catalog.get_recording(demo_ws.catalog.get_clip(ids[0]).recording_id)
    demo_ws.audio_path(bad.sha256).unlink()
    retry = caption_clips(demo_ws, [ids[0]], CountingTeacher(), force=True)
    assert retry.failed == 1 and retry.captioned == 0


def test_cancel_then_resume_where_it_stopped(demo_ws):
    cancel = threading.Event()
    teacher = CountingTeacher(on_batch=lambda n: cancel.set() if n >= 3 else None)     # batches of 3
    ids = demo_ws.catalog.clip_ids()
    first = caption_clips(demo_ws, ids, teacher, cancel=cancel)
    assert first.cancelled and first.captioned == 3
    resumed = caption_clips(demo_ws, ids, CountingTeacher())
    assert (resumed.skipped, resumed.captioned, resumed.cancelled) == (3, 7, False)


def test_reimported_audio_reuses_cached_captions(demo_ws, shared_data):
    from core.pipeline.importer import delete_clips, import_paths
    ws = demo_ws
    teacher = CountingTeacher()
    caption_clips(ws, ws.catalog.clip_ids(), teacher)
    delete_clips(ws, ws.catalog.clip_ids()[:2])
    import_paths(ws, [shared_data / "ovos_animals"])
    fresh = select_clips(ws, "uncaptioned")
    assert len(fresh) == 2
    report = caption_clips(ws, fresh, CountingTeacher())
    assert report.reused == 2 and report.captioned == 0           # no teacher call for the same audio


def test_select_by_filter_and_limit(demo_ws):
    ids = select_clips(demo_ws, "filter", query=ClipQuery(text="cow"))
    assert len(ids) == 1
    assert len(select_clips(demo_ws, "all", limit=4)) == 4
    with pytest.raises(ValueError):
        select_clips(demo_ws, "some")


def test_cli_caption_limit_then_only_uncaptioned(demo_ws, counting, capsys):
    from core.__main__ import main
    root = str(demo_ws.root)
    assert main(["caption", "--workspace", root, "--teacher", "counting", "--limit", "4"]) == 0
    assert "4 captioned" in capsys.readouterr().out
    assert main(["caption", "--workspace", root, "--teacher", "counting", "--only-uncaptioned", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"captioned": 6' in out and '"teacher": "counting:len-v1"' in out
    assert len(demo_ws.catalog.current_captions()) == 10


def test_captions_tab_runs_browses_and_recaptions(demo_ws, counting, app_factory):
    from gradio_client import Client

    from ui.state import AppState
    state = AppState(demo_ws.settings)
    client = Client(app_factory(state), verbose=False)
    prompt = client.predict("counting", api_name="/captions_default_prompt")
    assert prompt == ""                                   # counting has no DEFAULT_PROMPT
    status, failures, table, info, page = client.predict(
        "counting", "say the length", "all clips (cached ones cost nothing)", "", "(all)", 0, False,
        api_name="/captions_run")
    assert "10 captioned" in status and "10 clips" in info and page == 1
    assert all("seconds of sound" in row[4] for row in table["data"])
    clip_id = table["data"][0][0]
    wav, versions = client.predict(clip_id, api_name="/captions_clip")
    assert wav.endswith(".wav") and len(versions["data"]) == 1
    versions, table, info, failures = client.predict(clip_id, "counting", "a new prompt", "", "(all)", 1,
                                                     api_name="/captions_recaption")
    assert len(versions["data"]) == 2 and versions["data"][0][5] == "a new prompt"
    table, info = client.predict("cow", "(all)", 1, api_name="/captions_table")
    assert info.endswith("1 clips") and "seconds of sound" in table["data"][0][4]
    assert "Cancelling" in client.predict(api_name="/captions_cancel")
