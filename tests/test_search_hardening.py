"""The search path under abuse and load (issue 13): who may load which model (D7), result players
that need no ffprobe (D11), and searches that stay up while the index is rebuilt (D12).

Models here are `ToneEmbedder`s (tests/test_index_search.py): `Student.load` is replaced so that
any checkpoint folder, the shipped one included, loads as a ToneEmbedder named by its config.json.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.pipeline import index, search

from core.models import registry as models
from core.auth.access import AccessPolicy, parse_users
from tests.test_index_search import ToneEmbedder, clip_of, tone_ws  # noqa: F401 - tone_ws is a fixture

NONE = [[], [], [], None, None, None, None, None]        # the eight filter inputs, empty


@pytest.fixture
def tone_models(monkeypatch):
    """Every checkpoint folder loads as a ToneEmbedder with the folder's model id."""
    from core.models import student
    monkeypatch.setenv("HEARSAY_ONNX", "0")

    def load(folder, device="cpu"):
        return ToneEmbedder(json.loads((Path(folder) / "config.json").read_text())["model_id"])
    monkeypatch.setattr(student.Student, "load", staticmethod(load))
    models.clear_cache()
    yield
    models.clear_cache()


def checkpoint(folder: Path, model_id: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_id": model_id}))
    return folder


def collection_names(ws) -> set[str]:
    return {c.name for c in index.get_client(ws).list_collections()}


def app_error(call) -> str:
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as caught:
        call()
    return str(caught.value)


# -- D7: model names --------------------------------------------------------------------------------------
def test_only_admins_load_folders_and_the_refusal_reveals_nothing(tone_ws, tone_models, tmp_path):
    folder = checkpoint(tmp_path / "elsewhere" / "ckpt", "stray-model")
    assert models.resolve_path(str(folder), tone_ws) == folder.resolve()            # admins: any folder
    messages = set()
    for name in (str(folder), f"{folder}/../ckpt", str(tmp_path / "no-such-folder"), "~", "../../etc"):
        with pytest.raises(KeyError) as caught:
            models.resolve_path(name, tone_ws, allow_folders=False)
        messages.add(str(caught.value).replace(repr(name), "NAME"))
    assert len(messages) == 1, messages                     # same words whether the folder exists or not
    with pytest.raises(index.IndexUnavailable) as caught:
        index.resolve_embedder(tone_ws, str(folder), allow_folders=False)
    assert str(tmp_path) not in str(caught.value).replace(str(folder), "")
    # listed names still resolve
    assert models.resolve_path("shipped", tone_ws, allow_folders=False) == models.SHIPPED_DIR
    tone_ws.catalog.register_model("listed-model", str(checkpoint(tmp_path / "listed", "listed-model")))
    assert index.resolve_embedder(tone_ws, "listed-model", allow_folders=False).model_id == "listed-model"
    assert index.resolve_embedder(tone_ws, "active", allow_folders=False).model_id == models.shipped_model_id()


def test_status_never_creates_a_collection(tone_ws):
    emb = ToneEmbedder("never-indexed")
    before = collection_names(tone_ws)
    info = index.status(tone_ws, emb)
    assert info["indexed"] == 0 and not info["current"] and not index.has_collection(tone_ws, emb)
    assert collection_names(tone_ws) == before


def test_visitors_search_listed_models_only_and_never_start_an_index(tone_ws, tone_models, auth_app_factory,
                                                                     tmp_path):
    """The drill: an anonymous visitor typed a checkpoint folder into the model box, which loaded it
    and created (and filled) a new Chroma collection; the error for a missing folder said so."""
    from gradio_client import Client
    from ui.state import AppState
    ws = tone_ws
    folder = checkpoint(tmp_path / "elsewhere" / "ckpt", "stray-model")
    ws.catalog.register_model("listed-model", str(checkpoint(tmp_path / "listed", "listed-model")))
    url = auth_app_factory(AppState(ws.settings), AccessPolicy(parse_users("ann:pw-admin:admin"), visitor_mode=True))
    visitor = Client(url, verbose=False)

    # the active model (an admin chose it): a visitor's first search catches the index up
    out = visitor.predict("active", "a 1000 Hz beep", 0.0, *NONE, api_name="/search_text")
    assert out[0]["hits"][0]["name"] == "tone1000.wav"
    before = collection_names(ws)

    messages = set()
    for name in (str(folder), f"{folder}/../ckpt", str(tmp_path / "missing"), "/etc", "~/ckpt"):
        msg = app_error(lambda: visitor.predict(name, "a 1000 Hz beep", 0.0, *NONE, api_name="/search_text"))
        messages.add(msg.replace(name, "NAME"))
        for other in ("/search_index_status", "/search_model_changed"):
            app_error(lambda: visitor.predict(name, api_name=other))
    assert len(messages) == 1 and "pick" in messages.pop().lower()
    # a listed model without an index: a visitor does not start one
    msg = app_error(lambda: visitor.predict("listed-model", "a 1000 Hz beep", 0.0, *NONE, api_name="/search_text"))
    assert "isn't indexed yet" in msg
    app_error(lambda: visitor.predict("listed-model", "200 Hz, 1000 Hz", "{label}", 1, None,
                                      api_name="/search_classify"))
    app_error(lambda: visitor.predict("listed-model", 1, 0.0, *NONE, api_name="/search_more_like_this"))
    assert collection_names(ws) == before                          # nothing written by the visitor

    # an admin may still load a folder by path (and so index it)
    admin = Client(url, auth=("ann", "pw-admin"), verbose=False)
    out = admin.predict(str(folder), "a 1000 Hz beep", 0.0, *NONE, api_name="/search_text")
    assert out[0]["hits"][0]["name"] == "tone1000.wav" and out[0]["model_id"] == "stray-model"


# -- D11: players without ffprobe ---------------------------------------------------------------------------
def test_a_search_through_the_app_runs_no_ffprobe_and_its_players_play(tone_ws, app_factory, monkeypatch):
    """Gradio's Audio output ran ffprobe on every result WAV (10 processes per search, ~1.2 s)."""
    from gradio import processing_utils
    from gradio_client import Client
    from ui.state import AppState
    emb = ToneEmbedder()
    monkeypatch.setattr(index, "resolve_embedder", lambda ws, model="active", **kw: emb)
    probed = []
    monkeypatch.setattr(processing_utils, "ffmpeg_installed", lambda: True)     # as on a machine with ffmpeg
    monkeypatch.setattr(processing_utils, "audio_is_playable", lambda path: probed.append(path) or True)
    url = app_factory(AppState(tone_ws.settings))
    client = Client(url, verbose=False)
    out = client.predict("active", "a 1000 Hz beep", 0.0, *NONE, api_name="/search_text")
    assert out[0]["hits"][0]["name"] == "tone1000.wav"
    assert probed == []
    player = out[2]                                               # slot 1's player
    assert "<audio" in player and ".wav" in player and "gradio_api/file" not in player   # no server path
    src = player.split("src='", 1)[1].split("'", 1)[0].replace("&amp;", "&")
    wav = tone_ws.cache_dir / "clips" / src.split("/")[-1].split("?")[0]
    assert src.startswith("audio/") and not wav.exists()          # the search made no WAV: the first play does
    got = httpx.get(url + src)
    assert got.status_code == 200 and got.content[:4] == b"RIFF" and wav.is_file()
    other = out[0]["hits"][1]["clip_id"]                           # a clip id that is not this name's clip
    wrong = src.split("?")[0] + f"?clip={other}"
    wav.unlink()
    assert httpx.get(url + wrong).status_code == 404 and not wav.exists()


# -- D12: searching while the index is rebuilt -----------------------------------------------------------------
RAW = "Error executing plan: Internal error: Error creating hnsw segment reader: Nothing found on disk"


def test_a_store_error_during_search_is_a_plain_message(tone_ws, monkeypatch):
    from chromadb.errors import InternalError
    ws, emb = tone_ws, ToneEmbedder()
    index.sync(ws, emb)

    def broken(*args, **kwargs):
        raise InternalError(RAW)
    monkeypatch.setattr(search, "_nearest", broken)
    with pytest.raises(index.IndexBusy) as caught:
        search.search_text(ws, emb, "1000 Hz")
    assert "rebuilt" in str(caught.value) and "hnsw" not in str(caught.value)


def test_the_app_says_the_index_is_busy_instead_of_chromas_words(tone_ws, app_factory, monkeypatch):
    from chromadb.errors import InternalError
    from gradio_client import Client
    from ui.state import AppState
    emb = ToneEmbedder()
    index.sync(tone_ws, emb)
    monkeypatch.setattr(index, "resolve_embedder", lambda ws, model="active", **kw: emb)

    def broken(*args, **kwargs):
        raise InternalError(RAW)
    monkeypatch.setattr(search, "_nearest", broken)
    client = Client(app_factory(AppState(tone_ws.settings)), verbose=False)
    msg = app_error(lambda: client.predict("active", "1000 Hz", 0.0, *NONE, api_name="/search_text"))
    assert "try again" in msg and "hnsw" not in msg


def test_an_interrupted_rebuild_leaves_the_old_index_serving(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    index.sync(ws, emb)
    name = index.collection_name(ws, emb.model_id)
    cancel = threading.Event()

    def progress(done, total, message):
        if done >= 2:
            cancel.set()                                         # like Ctrl-C (or a kill) half-way
        if done:                                                 # while it runs, search answers from the old index
            assert search.search_text(ws, emb, "1000 Hz", k=9).hits[0].name == "tone1000.wav"
            assert index.open_collection(ws, emb).count() == 9
    report = index.sync(ws, emb, rebuild=True, batch_size=2, progress=progress, cancel=cancel)
    assert report.cancelled
    assert index.open_collection(ws, emb).count() == 9 and index.is_current(ws, emb)
    assert len(search.search_text(ws, emb, "1000 Hz", k=9).hits) == 9
    assert [i["collection"] for i in index.list_indexes(ws)] == [name]     # the half-built one is not listed

    class Crash(ToneEmbedder):                                   # a rebuild that dies half-way
        def embed_audio(self, waves):
            if self.audio_calls >= 1:
                raise KeyboardInterrupt
            return super().embed_audio(waves)
    crash = Crash()
    crash._hearsay_checksum = index.checksum_of(emb)
    with pytest.raises(KeyboardInterrupt):
        index.sync(ws, crash, rebuild=True, batch_size=2)
    assert index.open_collection(ws, emb).count() == 9 and index.is_current(ws, emb)

    report = index.sync(ws, emb, rebuild=True)                    # a full rebuild swaps the new one in
    assert report.rebuilt == "requested" and report.collection == name and report.embedded == 9
    assert index.open_collection(ws, emb).count() == 9 and index.is_current(ws, emb)
    assert {c for c in collection_names(ws) if emb.model_id.split("/")[0] in c or "tone" in c} == {name}
    assert search.search_text(ws, emb, "1000 Hz", k=1).hits[0].name == "tone1000.wav"


def test_a_rebuild_also_rebuilds_captions_without_a_gap(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    cid = clip_of(ws, "tone200.wav")
    ws.catalog.add_caption(cid, "a low hum", "teacher")
    index.sync(ws, emb)
    seen = []

    def progress(done, total, message):
        seen.append(index.captions_collection(ws).count())       # caption scores keep working meanwhile
    report = index.sync(ws, emb, rebuild=True, progress=progress)
    assert report.captions_embedded == 1 and set(seen) == {1}
    assert index.captions_collection(ws).count() == 1


def test_cli_search_never_runs_an_unbounded_sync(tone_ws, monkeypatch, capsys):
    from core.cli import search as cli_search
    from core.__main__ import main
    emb = ToneEmbedder()
    monkeypatch.setattr(index, "resolve_embedder", lambda ws, model="active", **kw: emb)
    monkeypatch.setattr(cli_search, "SEARCH_MAX_NEW", 3)
    root = str(tone_ws.root)
    assert main(["search", "1000 Hz", "--json", "--workspace", root]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["hits"] == [] and emb.clips_embedded <= 1      # only the checksum probe
    assert "9 clips are not indexed" in captured.err and "index" in captured.err
    monkeypatch.setattr(cli_search, "SEARCH_MAX_NEW", 500)
    assert main(["search", "1000 Hz", "--json", "--workspace", root]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["name"] == "tone1000.wav"


def test_loaded_vectors_are_unit_length(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    index.sync(ws, emb, rebuild=True)
    ids, vectors = index.get_embeddings(ws, emb)
    assert len(ids) == 9 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_result_players_find_their_wav_by_content_key(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    index.sync(ws, emb)
    hit = search.search_text(ws, emb, "1000 Hz", k=1).hits[0]
    first = search.player_wav(ws, hit)                              # made once, through the catalogue
    assert first == ws.clip_wav_path(hit.clip_id) and first.is_file()
    assert "audio_key" not in search.search_text(ws, emb, "1000 Hz", k=1).to_dict()["hits"][0]
    calls = []
    real = ws.catalog.get_clip
    ws.catalog.get_clip = lambda cid: calls.append(cid) or real(cid)
    assert search.player_wav(ws, hit) == first and calls == []       # then found by its key alone


# -- throughput under load -----------------------------------------------------------------------------------
def test_a_query_never_waits_for_a_bulk_encoding(monkeypatch):
    """An index filling its captions (a caption job publishes some every second) encodes them on a
    niced thread; a query waiting for the same encoder waited for that slow thread. Long calls have
    a copy of their own: a query is answered while one is still running."""
    from core.models import text_encoder
    release, calls = threading.Event(), []

    class Model:
        def __init__(self, bulk):
            self.bulk = bulk

        def encode(self, texts, **kw):
            calls.append((self.bulk, len(texts)))
            if self.bulk:
                release.wait(10)                               # a slow background encoding
            return np.ones((len(texts), 384), np.float32)
    copies = {False: Model(False), True: Model(True)}
    monkeypatch.setattr(text_encoder, "get_text_encoder", lambda device="cpu", bulk=False: copies[bulk])
    monkeypatch.setattr(text_encoder, "_recent", type(text_encoder._recent)())
    filling = threading.Thread(target=text_encoder.encode, args=(["a beep", "a hum"],), kwargs={"bulk": True})
    filling.start()
    try:
        done = threading.Thread(target=text_encoder.encode, args=(["a dog barking"],))
        done.start()
        done.join(5)
        assert not done.is_alive() and (False, 1) in calls          # answered while the bulk call still runs
        assert filling.is_alive()
    finally:
        release.set()
        filling.join(10)
    text_encoder.encode([f"caption {i}" for i in range(40)])        # long calls go to the bulk copy by default
    assert calls[-1] == (True, 40) and len(text_encoder._recent) == 1


def test_a_search_answers_at_once_and_the_catch_up_runs_behind_it(tone_ws):
    """The app's searches (wait=False) never wait for a sync of a filled index: it runs in a
    background thread and the next searches see its result; an empty index is still filled first."""
    import time
    ws, emb = tone_ws, ToneEmbedder()
    first = index.catch_up(ws, emb, max_new=500, wait=False)
    assert first.embedded == 9 and not first.deferred                 # the first search of a new workspace
    ws.catalog.add_caption(1, "a beep", "teacher")
    report = index.catch_up(ws, emb, max_new=500, every=0, wait=False)
    assert report.deferred and report.embedded == 0 and report.updated == 0
    deadline = time.monotonic() + 20
    while not index.is_current(ws, emb) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert index.is_current(ws, emb)
    assert "a beep" in [h.caption for h in search.search_text(ws, emb, "1000 Hz", k=9).hits]


def test_concurrent_queries_share_encoder_calls():
    """While one text encoding runs, the queries arriving meanwhile wait and go through the next call
    together; each still gets its own vector, and an encoder error reaches every query of its batch."""
    import time
    search.clear_query_cache()
    started, release = threading.Event(), threading.Event()

    class Slow(ToneEmbedder):
        model_id = "slow-tone"
        calls: list = []

        def embed_text(self, texts):
            self.calls.append(list(texts))
            started.set()
            release.wait(10)                                   # the first call holds until all have queued
            if any("boom" in t for t in texts):
                raise RuntimeError("encoder failed")
            return super().embed_text(texts)
    emb = Slow()
    emb._hearsay_checksum = "slow"
    texts = [f"{f} Hz" for f in (200, 440, 1000, 3000, 5000, 700)]
    results = {}

    def ask(text):
        results[text] = search.embed_query_text(emb, text)
    first = threading.Thread(target=ask, args=("100 Hz",))
    first.start()
    started.wait(5)
    threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    batcher = search._batchers[("slow-tone", "slow")]
    deadline = time.monotonic() + 10
    while len(batcher.queue) < len(texts) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in [first, *threads]:
        t.join(10)
    assert len(emb.calls) == 2 and sorted(emb.calls[1]) == sorted(texts)      # one call for all six
    for text in texts:
        assert np.allclose(results[text], ToneEmbedder().embed_text([text])[0])
    errors = []

    def ask_boom(text):
        try:
            search.embed_query_text(emb, text)
        except RuntimeError as exc:
            errors.append(str(exc))
    bad = [threading.Thread(target=ask_boom, args=(t,)) for t in ("boom 1 Hz", "boom 2 Hz")]
    for t in bad:
        t.start()
    for t in bad:
        t.join(10)
    assert errors == ["encoder failed"] * 2
    search.clear_query_cache()


def test_a_query_text_is_encoded_once_for_the_model_and_the_captions(monkeypatch):
    from core.models import text_encoder
    calls = []
    monkeypatch.setattr(text_encoder, "_encode",
                        lambda texts, batch_size, device, bulk=False: calls.append(list(texts)) or np.eye(384, dtype=np.float32)[
                            [len(t) % 384 for t in texts]])
    monkeypatch.setattr(text_encoder, "_recent", type(text_encoder._recent)())
    a = text_encoder.encode(["a dog barks", "rain"])
    b = text_encoder.encode(["rain", "a kettle"])
    assert calls == [["a dog barks", "rain"], ["a kettle"]]
    assert np.array_equal(a[1], b[0]) and b.shape == (2, 384)
    text_encoder.encode([f"caption {i}" for i in range(40)])          # long calls (training) are not kept
    assert len(text_encoder._recent) == 3


def test_searches_do_not_queue_behind_catch_up_syncs(tone_ws):
    """A caption job changes the catalogue every few clips; each search used to sync (a read of every
    record) under one lock, so searches queued behind each other's syncs."""
    ws, emb = tone_ws, ToneEmbedder()
    first = index.catch_up(ws, emb, max_new=500)                 # an empty index: the first search fills it
    assert first.embedded == 9 and not first.deferred
    ws.catalog.add_caption(1, "a beep", "teacher")
    assert index.catch_up(ws, emb, max_new=500, every=60).deferred          # a sync started moments ago
    assert "a beep" not in [h.caption for h in search.search_text(ws, emb, "1000 Hz", k=9).hits]
    lock = index._lock_for(index.collection_name(ws, emb.model_id))
    with lock:                                                   # another sync is running: do not wait for it
        assert index.catch_up(ws, emb, max_new=500, every=0).deferred
    report = index.catch_up(ws, emb, max_new=500, every=0)
    assert report.updated == 1 and not report.deferred and index.is_current(ws, emb)
    assert index.catch_up(ws, emb, max_new=500) is None          # nothing changed: nothing to do
