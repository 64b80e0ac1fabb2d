"""The app shell and the Library tab, driven through gradio_client against a running app."""
from __future__ import annotations

import zipfile

import pytest
import soundfile as sf
from gradio_client import Client, handle_file

from tests.conftest import tone


@pytest.fixture
def client(settings, app_factory):
    from ui.state import AppState
    state = AppState(settings)
    client = Client(app_factory(state), verbose=False)
    client.state = state
    return client


def test_import_browse_play_delete(client, tmp_path, shared_data):
    ws = client.state.ws
    archive = tmp_path / "animals.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("cat.flac", "dog.flac", "cow.flac"):
            zf.write(shared_data / "ovos_animals" / "audio" / name, f"audio/{name}")
        zf.write(shared_data / "ovos_animals" / "meta.csv", "meta.csv")
    loose = tmp_path / "beep.wav"
    sf.write(loose, tone(1.5, 880), 16_000)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not audio at all")

    report, stats, _ = client.predict([handle_file(archive), handle_file(loose), handle_file(bad)], "",
                                      api_name="/library_import")
    rows = {r[0]: (r[1], r[2]) for r in report["data"]}
    assert rows["beep.wav"][0] == "imported" and rows["broken.wav"][0] == "error"
    assert sum(status == "imported" for status, _ in rows.values()) == 4
    assert "**4** recordings" in stats

    table, info = client.predict("", "animals", "(all)", 1, api_name="/library_table")
    assert "3 clips match" in info
    labels = sorted(r[table["headers"].index("label")] for r in table["data"])
    assert labels == ["cat", "cow", "dog"]

    clip_id = table["data"][0][0]
    wav, png, details = client.predict(clip_id, api_name="/library_clip")
    assert sf.info(wav).samplerate == 16_000 and png.endswith(".png")
    assert details["source"] == "animals" and details["metadata"]["label"] in {"cat", "cow", "dog"}

    client.predict(clip_id, "", "(all)", "(all)", 1, api_name="/library_delete")
    assert clip_id not in ws.catalog.clip_ids() and len(ws.catalog.recordings()) == 3
    # importing a server-side folder again only reports duplicates
    report, _, _ = client.predict([], str(shared_data / "ovos_animals"), api_name="/library_import")
    statuses = [r[1] for r in report["data"]]
    assert statuses.count("duplicate") == 2 and statuses.count("imported") == 8


def test_import_without_input_is_a_clear_error(client):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="Choose files"):
        client.predict([], "  ", api_name="/library_import")


def test_every_event_has_an_explicit_api_name(settings):
    from app import build_app
    from ui.state import AppState
    demo = build_app(AppState(settings))
    named = [fn.api_name for fn in demo.fns.values() if fn.api_name]
    assert "library_import" in named and "library_delete" in named
    # an event without a name would be exposed as an auto-generated "/lambda" or "/fn" endpoint
    assert not [n for n in named if n.startswith(("lambda", "fn", "<lambda>"))], named
