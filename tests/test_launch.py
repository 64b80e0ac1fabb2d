"""On launch the app indexes the active model in the background (issue 14, item 1): the page does not wait
for it, and what it is doing is readable (`state.launch_index`) for the Search tab's status line."""
from __future__ import annotations

import pytest
import soundfile as sf

from tests.conftest import tone


def test_launch_indexes_the_active_model_in_the_background(settings):
    from app import seed_in_background
    from core.pipeline import index
    from core.pipeline.importer import import_paths
    from ui.state import AppState
    state = AppState(settings)
    folder = settings.workspace.parent / "audio"
    folder.mkdir()
    for i, freq in enumerate((330, 440, 550)):
        sf.write(folder / f"t{i}.wav", tone(freq=freq), 16_000)
    assert import_paths(state.ws, [folder]).count("imported") == 3
    assert state.launch_index.state == "idle" and state.launch_index.describe() == ""

    thread = seed_in_background(state, seed=False)
    assert state.launch_index.finished.wait(180), state.launch_index
    thread.join(10)
    job = state.launch_index
    assert job.state == "done" and job.done == job.total == state.ws.catalog.stats().clips, job
    assert "3" in job.describe()                          # the report's summary: how many clips went in
    assert index.is_current(state.ws, index.resolve_embedder(state.ws, "active"))

    again = seed_in_background(state, seed=False)         # the next launch finds it complete: nothing to do
    again.join(120)
    assert state.launch_index.state == "done" and "already up to date" in state.launch_index.describe()


def test_the_job_reads_as_one_status_line():
    from ui.state import BackgroundJob
    job = BackgroundJob()
    job.start()
    assert job.running and job.describe() == "Preparing the search index…"
    job.advance(40, 82)
    assert job.describe() == "Indexing 40 of 82 clips…"
    job.finish("no model yet", failed=True)
    assert not job.running and job.state == "failed" and job.finished.is_set() and job.describe() == "no model yet"


def test_a_slow_first_answer_does_not_stop_the_launch(settings, monkeypatch):
    """Gradio's own localhost check gives the server one 3-second try; on a busy machine (CI, a
    training run) that failed the launch. Simulate a check that never succeeds: the app still starts,
    waiting for its server itself."""
    import gradio.networking
    import httpx
    from app import build_app
    from tests.conftest import free_port
    from ui.state import AppState

    monkeypatch.setattr(gradio.networking, "url_ok", lambda url: False)
    demo = build_app(AppState(settings))
    demo.queue()
    port = free_port()
    try:
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        assert httpx.get(f"http://127.0.0.1:{port}/config", timeout=30).status_code == 200
    finally:
        demo.close()


def test_a_server_that_never_answers_is_named():
    from tests.conftest import free_port
    from ui.api import wait_until_served

    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(RuntimeError, match=f"does not answer at {url}"):
        wait_until_served(url, timeout=0.5)
