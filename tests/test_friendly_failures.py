"""Friendly failures (issue 14, item 6): start-up mistakes end in one line and a non-zero exit code, user
mistakes print no traceback on the server console (one log line with the user), and the Library never
reports deleting a clip it did not delete."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def run_app(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=OFFLINE, capture_output=True,
                          text=True, timeout=timeout)


def test_a_busy_port_is_named_with_how_to_choose_another(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_app("--port", str(port), "--workspace", str(tmp_path / "ws"), "--no-seed")
    assert done.returncode != 0
    message = done.stderr.strip()
    assert "Traceback" not in done.stderr and len(message.splitlines()) == 1, done.stderr
    assert f"port {port} is already in use" in message
    assert "--port" in message and "GRADIO_SERVER_PORT" in message
    assert not (tmp_path / "ws").exists()           # checked before anything is written


def test_an_unwritable_workspace_is_named_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_app("--port", str(free_port()), "--workspace", str(blocker / "ws"), "--no-seed")
    assert done.returncode != 0
    message = done.stderr.strip()
    assert "Traceback" not in done.stderr and len(message.splitlines()) == 1, done.stderr
    assert "cannot write the workspace folder" in message and str(blocker) in message
    assert "--workspace" in message


@pytest.fixture
def client(settings, app_factory):
    from gradio_client import Client
    from ui.state import AppState
    return Client(app_factory(AppState(settings)), verbose=False)


def test_user_mistakes_print_no_traceback_and_log_one_line(client, capfd, caplog):
    from gradio_client.exceptions import AppError
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="hearsay.access"):
        with pytest.raises(AppError, match="There is no clip 4242"):
            client.predict("4242", api_name="/library_clip")
        with pytest.raises(AppError, match="Choose files"):
            client.predict(None, "", api_name="/library_import")
    console = capfd.readouterr()
    assert "Traceback" not in console.out + console.err
    lines = [r for r in caplog.records if r.getMessage() == "refused input"]
    assert [r.event for r in lines] == ["library_clip", "library_import"]
    assert "4242" in lines[0].reason and lines[0].user is None      # a local call: no signed-in user


def test_deleting_with_nothing_selected_deletes_nothing_and_says_so(client, settings):
    from core.store.workspace import Workspace
    from tests.conftest import tone
    import soundfile as sf
    from core.pipeline.importer import import_paths
    wav = settings.workspace.parent / "tone.wav"
    sf.write(wav, tone(), 16_000)
    ws = Workspace(settings.workspace, settings)
    assert import_paths(ws, [wav]).count("imported") == 1
    before = ws.catalog.stats().clips
    for nothing in ("", "0", None):
        out = client.predict(nothing, "", "(all)", "(all)", 1, api_name="/library_delete")
        message = out[0] if isinstance(out, (list, tuple)) else out
        assert "Deleted" not in (message or ""), (nothing, message)
    out = client.predict("987654", "", "(all)", "(all)", 1, api_name="/library_delete")
    assert "Deleted" not in (out[0] or "")
    assert ws.catalog.stats().clips == before
    clip = ws.catalog.clip_ids()[0]
    out = client.predict(str(clip), "", "(all)", "(all)", 1, api_name="/library_delete")
    assert out[0] == f"Deleted clip {clip}." and ws.catalog.stats().clips == before - 1
    message, table, page_info, stats, selected, *media = out     # (the confirm row is no API output)
    assert selected == "" and "Deleted" in message                  # the id box is left empty, not 0


def test_the_id_box_starts_empty(settings):
    from app import build_app
    from ui.state import AppState
    demo = build_app(AppState(settings))
    box = next(b for b in demo.blocks.values() if getattr(b, "label", "") == "Selected clip (click a row, or type an id)")
    assert box.value in ("", None)


def test_no_empty_number_box_shows_a_made_up_zero(settings):
    """Gradio draws an empty Number as "0" unless it has a placeholder: an id box would claim clip 0."""
    import gradio as gr
    from app import build_app
    from ui.state import AppState
    demo = build_app(AppState(settings))
    empty = [b for b in demo.blocks.values() if isinstance(b, gr.Number) and b.value is None]
    assert len(empty) >= 7                      # every id box of every tab, and the search filters
    assert [b.label for b in empty if not b.placeholder] == []
    # the page draws None as 0 until the value is sent empty: a page-load event does that for every box
    on_load = [set(d["outputs"]) for d in demo.config["dependencies"]
               if any(t[1] == "load" for t in d["targets"])]
    assert any({b._id for b in empty} <= outputs for outputs in on_load)
