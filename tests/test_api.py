"""The documented API (ui/api.py), called as a user would: gradio_client, by name, with keyword arguments,
against the real app on the bundled demo (seeded and indexed with the shipped student once per module)."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT

DOG = ROOT / "assets" / "demo" / "audio" / "ovos_animals__dog.flac"
ENDPOINTS = {"/search": ["query", "k", "model"], "/search_audio": ["file", "k", "model"],
             "/classify": ["file_or_clip", "labels", "model"], "/caption": ["file", "teacher"]}


@pytest.fixture(scope="module")
def demo_settings(tmp_path_factory):
    from core.pipeline import index
    from core.pipeline.importer import seed_demo
    from core.store.settings import load_settings
    from core.store.workspace import Workspace
    settings = load_settings(workspace=tmp_path_factory.mktemp("api") / "ws", seed_demo=False)
    ws = Workspace(settings.workspace, settings)
    assert seed_demo(ws).count("imported") >= 80
    index.sync(ws, index.resolve_embedder(ws, "active"))
    return settings


@pytest.fixture
def client_of(demo_settings, app_factory, auth_app_factory):
    """`client = client_of(policy=None)`: the real app on the demo workspace, and a gradio_client on it."""
    from gradio_client import Client

    from ui.state import AppState

    def connect(policy=None):
        state = AppState(demo_settings)
        url = app_factory(state) if policy is None else auth_app_factory(state, policy)
        return Client(url, verbose=False)
    return connect


def dog_clip_ids(settings) -> set[int]:
    from core.store.workspace import Workspace
    catalog = Workspace(settings.workspace, settings).catalog
    return {c.id for r in catalog.recordings() if "dog" in r.original_name for c in catalog.clips(recording_id=r.id)}


def test_view_api_lists_the_four_endpoints_with_named_parameters(client_of):
    endpoints = client_of().view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name, params in ENDPOINTS.items():
        assert [p["parameter_name"] for p in endpoints[name]["parameters"]] == params, name
        assert endpoints[name]["description"], f"{name} has no description"
    assert endpoints["/search"]["parameters"][1]["parameter_default"] == 10


def test_search_finds_the_dog_and_its_audio_url_plays(client_of, demo_settings):
    client = client_of()
    hits = client.predict(query="dog barking", k=5, api_name="/search")
    assert len(hits) == 5
    assert set(hits[0]) >= {"clip_id", "score", "caption", "tags", "audio_url"}
    assert dog_clip_ids(demo_settings) & {h["clip_id"] for h in hits}, [h["name"] for h in hits]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    url = hits[0]["audio_url"]
    assert url.startswith(client.src.rstrip("/") + "/audio/") and str(demo_settings.workspace) not in url
    response = httpx.get(url)
    assert response.status_code == 200 and response.content[:4] == b"RIFF" and len(response.content) > 10_000
    assert response.headers["content-type"] == "audio/wav"
    # only cached clip audio is served, by name: nothing else of the workspace
    for name in ("..%2Fcatalog.db", "catalog.db", "x.wav"):
        assert httpx.get(client.src.rstrip("/") + "/audio/" + name).status_code == 404


def test_search_audio_and_classify_a_file_or_a_clip(client_of, demo_settings):
    from gradio_client import handle_file
    client = client_of()
    hits = client.predict(file=handle_file(str(DOG)), k=3, api_name="/search_audio")
    dogs = dog_clip_ids(demo_settings)
    assert hits[0]["clip_id"] in dogs and hits[0]["score"] > 0.9, hits[0]

    probs = client.predict(file_or_clip=handle_file(str(DOG)), labels=["dog barking", "church bell", "rain"],
                           api_name="/classify")
    assert list(probs) == sorted(probs, key=probs.get, reverse=True)          # ranked, most likely first
    assert next(iter(probs)) == "dog barking" and abs(sum(probs.values()) - 1) < 1e-4
    by_clip = client.predict(file_or_clip=min(dogs), labels="dog barking, church bell, rain", api_name="/classify")
    assert next(iter(by_clip)) == "dog barking"


def test_caption_with_the_embedded_teacher(client_of):
    from gradio_client import handle_file
    out = client_of().predict(file=handle_file(str(DOG)), api_name="/caption")
    assert out["teacher"].startswith("embedded:") and out["caption"] and 0 < out["seconds"] <= 30
    assert "dog" in out["caption"].lower() or any("dog" in t.lower() for t in out["tags"]), out


def test_bad_input_gets_one_clear_message(client_of, tmp_path):
    from gradio_client import handle_file
    client = client_of()
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not a sound")
    cases = [
        (dict(query="  ", api_name="/search"), "Give a query"),
        (dict(query="dog", k=0, api_name="/search"), "k must be from 1 to 50"),
        (dict(query="dog", k=500, api_name="/search"), "k must be from 1 to 50"),
        (dict(file=None, api_name="/search_audio"), "Send an audio file"),
        (dict(file=handle_file(str(not_audio)), api_name="/search_audio"), "cannot decode audio"),
        (dict(file_or_clip=1, labels=[], api_name="/classify"), "at least two labels"),
        (dict(file_or_clip=99_999, labels="a, b", api_name="/classify"), "no indexed clip 99999"),
        (dict(file=handle_file(str(not_audio)), api_name="/caption"), "cannot decode audio"),
    ]
    for kwargs, message in cases:
        with pytest.raises(Exception, match=message):
            client.predict(**kwargs)


def test_visitors_may_search_and_caption_but_not_spend_a_paid_teacher(client_of, demo_settings):
    from gradio_client import handle_file

    from core.auth.access import AccessPolicy, parse_users
    client = client_of(AccessPolicy(parse_users("ann:pw-ann-1:annotator"), visitor_mode=True))
    hits = client.predict(query="dog barking", k=3, api_name="/search")
    assert httpx.get(hits[0]["audio_url"]).status_code == 200
    assert client.predict(file=handle_file(str(DOG)), api_name="/caption")["caption"]
    with pytest.raises(Exception, match="for signed-in annotators"):
        client.predict(file=handle_file(str(DOG)), teacher="openai-compatible", api_name="/caption")
