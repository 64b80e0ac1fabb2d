"""The public demo over HTTP: what anonymous visitors can read, download, upload and guess.

One app in visitor mode, launched the way app.py launches it, with its workspace outside the working
and temp directories (the Spaces layout, `/data/workspace`), holding an annotator's work:
- clip 1: a teacher caption that bob edited (decided: published);
- clip 2: a teacher caption, then a draft edit by bob sent back to pending (not published);
- clip 3: a teacher caption that bob rejected, with a reason (not published).
"""
from __future__ import annotations

import json
import tempfile
import time
import zipfile

import httpx
import pytest
from gradio_client import Client

from core.auth.access import AccessPolicy, parse_users

USERS = "ann:pw-admin:admin,bob:pw-annotator:annotator,vic:pw-visitor:visitor"
PUBLISHED = "a grey cat meows twice"
DRAFT = "DRAFT-BY-ANNOTATOR unfinished words"
REJECTED = "REJECTED-TEACHER-TEXT about nothing"
REASON = "REASON-PRIVATE clipped audio"
LEGACY_SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_data):
    from app import build_app, head_html
    from core.pipeline import review
    from core.pipeline.importer import import_paths
    from core.store.logs import configure
    from core.store.settings import load_settings
    from ui import guard
    from ui.state import AppState

    patch = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("public")
    (base / "tmp").mkdir()
    patch.setattr(tempfile, "tempdir", str(base / "tmp"))          # the workspace lies outside cwd and tmp
    settings = load_settings(workspace=base / "ws", seed_demo=False, extra={"visitor_upload_mb": 1})
    state = AppState(settings)
    ws = state.ws
    assert import_paths(ws, [shared_data / "ovos_animals"]).count("imported") == 10
    cat = ws.catalog
    one, two, three = cat.clip_ids()[:3]
    for cid, text in ((one, "a cat meows"), (two, "a cow moos"), (three, REJECTED)):
        cat.add_caption(cid, text, "teacher", teacher="embedded")
    review.edit(cat, one, "bob", PUBLISHED, cat.get_review(one).version)
    review.edit(cat, two, "bob", DRAFT, cat.get_review(two).version)
    review.reset(cat, two, "bob", cat.get_review(two).version)
    review.reject(cat, three, "bob", cat.get_review(three).version, reason=REASON)
    cat.set_value("ui.browser_secret", LEGACY_SECRET)              # what older versions kept there
    log_path = configure(ws.root)

    policy = AccessPolicy(parse_users(USERS), visitor_mode=True)
    demo = build_app(state, policy)
    demo.queue()
    from tests.conftest import free_port
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, head=head_html(),
                max_file_size=f"{int(settings.max_upload_mb)}mb", allowed_paths=guard.served_paths(ws),
                **guard.launch_options(demo, policy))
    guard.after_launch(demo, policy)
    try:
        yield type("Server", (), {"url": f"http://127.0.0.1:{port}/", "ws": ws, "demo": demo, "log": log_path,
                                  "clips": (one, two, three)})
    finally:
        demo.close()
        _detach_log(log_path)
        patch.undo()


def _detach_log(path):
    import logging
    logger = logging.getLogger("hearsay")
    for handler in [h for h in logger.handlers if getattr(h, "baseFilename", None) == str(path.resolve())]:
        handler.close()
        logger.removeHandler(handler)


def _log_lines(path) -> list[dict]:
    for handler in __import__("logging").getLogger("hearsay").handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- D5: review exports are never served by path -----------------------------------------------------
def test_a_review_export_downloads_for_its_annotator_only(server):
    from ui import guard
    assert not any("exports" in p for p in guard.served_paths(server.ws))
    bob = Client(server.url, auth=("bob", "pw-annotator"), verbose=False)
    message, download = bob.predict("jsonl", "", [], api_name="/review_export")
    assert message.startswith("✔"), message
    with zipfile.ZipFile(download) as zf:
        assert any(name.endswith(".jsonl") for name in zf.namelist())
    # whatever export zips exist in the workspace, nobody can fetch them by path
    stamp = time.strftime("%Y%m%d-%H%M")
    guesses = [p for p in server.ws.root.rglob("*.zip")] + \
        [server.ws.cache_dir / "exports" / f"{stamp}{s:02d}-jsonl.zip" for s in range(60)]
    for path in guesses:
        assert httpx.get(f"{server.url}gradio_api/file={path}").status_code in (403, 404), path


def test_staged_downloads_expire(tmp_path, monkeypatch):
    import os
    from ui import review as review_tab
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    export = tmp_path / "work" / "20261201-084910-jsonl"
    export.mkdir(parents=True)
    (export / "captions.jsonl").write_text("{}\n")
    first = review_tab.download_zip(export)
    second = review_tab.download_zip(export)
    assert first != second and zipfile.is_zipfile(first)                          # a fresh random folder each time
    old = os.path.dirname(first)
    os.utime(old, (time.time() - review_tab.DOWNLOAD_TTL - 60,) * 2)
    assert review_tab.expire_downloads() == 1
    assert not os.path.exists(old) and os.path.exists(second)


# -- D8: visitors read published captions only ------------------------------------------------------------
def test_visitors_read_published_captions_only(server):
    anonymous = Client(server.url, verbose=False)
    one, two, three = server.clips
    table, info = anonymous.predict("", "(all)", "rejected", 1, api_name="/library_table")
    assert "status" not in table["headers"] and "10 clips match" in info        # no status, no status filter
    seen = json.dumps(table)
    assert PUBLISHED in seen and "a cow moos" in seen
    for private in (DRAFT, REJECTED, "bob"):
        assert private not in seen, private
    for probe in ("DRAFT", "REJECTED"):                                            # no oracle through the filter
        _, info = anonymous.predict(probe, "(all)", "(all)", 1, api_name="/library_table")
        assert "0 clips match" in info, probe
    details = {cid: anonymous.predict(cid, api_name="/library_clip")[2] for cid in (one, two, three)}
    assert details[one]["caption"] == PUBLISHED and details[two]["caption"] == "a cow moos"
    assert details[three]["caption"] is None
    for private in (DRAFT, REJECTED, REASON, "bob", "annotator", "review", "edited", "rejected"):
        assert private not in json.dumps(details), private
    # annotators still see everything
    bob = Client(server.url, auth=("bob", "pw-annotator"), verbose=False)
    table, _ = bob.predict("", "(all)", "(all)", 1, api_name="/library_table")
    assert "status" in table["headers"] and DRAFT in json.dumps(table)
    assert "bob" in json.dumps(bob.predict(one, api_name="/library_clip")[2])


def test_the_page_config_holds_no_annotator_work_and_no_secret(server):
    config = httpx.get(f"{server.url}config").text
    assert '"components"' in config
    for private in (PUBLISHED, DRAFT, REJECTED, REASON, "a cow moos", LEGACY_SECRET):
        assert private not in config, private


# -- D9: sign-in throttling and its audit trail -------------------------------------------------------------
def test_sign_in_is_throttled_and_failures_are_logged(server):
    gate = server.demo.hearsay_sign_in
    try:
        for i in range(5):
            response = httpx.post(f"{server.url}login", data={"username": "vic", "password": f"guess-{i}"})
            assert response.status_code == 400
        started = time.perf_counter()
        response = httpx.post(f"{server.url}login", data={"username": "vic", "password": "pw-visitor"})
        assert response.status_code == 429 and "try again" in response.text
        assert time.perf_counter() - started < 0.5                               # refused before any hashing
        assert int(response.headers["retry-after"]) >= 1
        failed = [x for x in _log_lines(server.log) if x["message"] == "sign-in failed"]
        assert len(failed) == 5 and all(x["user"] == "vic" and x["address"] == "127.0.0.1" for x in failed)
        assert "guess-" not in server.log.read_text()
    finally:
        gate.throttle.reset()
    assert httpx.post(f"{server.url}login", data={"username": "vic", "password": "pw-visitor"}).status_code == 200


# -- D17: anonymous uploads are small, counted and expire ---------------------------------------------------
def test_anonymous_uploads_are_capped(server):
    upload = f"{server.url}gradio_api/upload"
    big, small = b"\0" * 1_500_000, b"\0" * 100_000                               # the cap here: 1 MB
    response = httpx.post(upload, files={"files": ("big.wav", big)})
    assert response.status_code == 413 and "sign in" in response.text
    assert httpx.post(upload, files={"files": ("small.wav", small)}).status_code == 200
    recording = f"{server.url}gradio_api/process_recording"                       # the microphone's route
    assert httpx.post(recording, files={"data": ("rec.wav", big)}).status_code == 413

    def chunks():
        yield small
    assert httpx.post(upload, content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}) \
        .status_code == 411
    with httpx.Client() as bob:                                                   # editors upload imports
        assert bob.post(f"{server.url}login", data={"username": "bob", "password": "pw-annotator"}).status_code == 200
        assert bob.post(upload, files={"files": ("big.wav", big)}).status_code == 200
    frequency, age = server.demo.delete_cache                                     # and uploads expire
    assert frequency and age <= 24 * 3600
