"""core.pipeline.index + core.pipeline.search (+ the CLI and the Search tab): consistency with the catalogue, filters,
paging, hybrid scores, zero-shot labels, a real `chroma run` server, and one run on real clips.

Two test doubles stand in for the student:
- `ToneEmbedder` hears only which of 16 pitch bands holds a tone's energy and reads only a number
  of Hz in a text, so every ranking below can be worked out by hand (no model to load);
- `PriorEmbedder` hears through YAMNet: a clip's three likeliest AudioSet class names, embedded
  with MiniLM like the texts; used on real animal clips.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.pipeline import fusion, index, search
from core.pipeline.importer import delete_clips, import_paths
from core.store.workspace import Workspace
from tests.conftest import free_port, tone

EDGES = np.geomspace(100, 7000, 17)
FREQS = (200, 440, 1000, 3000, 5000)


class ToneEmbedder:
    model_id = "test/tone:v1"          # characters Chroma refuses in names, on purpose
    dim = 16

    def __init__(self, model_id: str | None = None):
        if model_id:
            self.model_id = model_id
        self.audio_calls = 0
        self.clips_embedded = 0

    @staticmethod
    def band(freq: float) -> int:
        return int(np.clip(np.searchsorted(EDGES, freq) - 1, 0, 15))

    def embed_audio(self, waves):
        self.audio_calls += 1
        self.clips_embedded += len(waves)
        out = []
        for w in waves:
            spec = np.abs(np.fft.rfft(w))
            freqs = np.fft.rfftfreq(len(w), 1 / 16_000)
            v = np.array([spec[(freqs >= a) & (freqs < b)].sum() for a, b in zip(EDGES[:-1], EDGES[1:])]) + 1e-3
            out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)

    def embed_text(self, texts):
        out = []
        for t in texts:
            v = np.full(16, 1e-3)
            m = re.search(r"(\d+)\s*hz", t.lower())
            if m:
                v[self.band(float(m.group(1)))] = 1.0
            out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)


class PriorEmbedder:
    """Audio → MiniLM of the tagger's three most likely AudioSet class names; text → MiniLM."""
    model_id = "test-yamnet-prior"
    dim = 384

    def embed_audio(self, waves):
        from core.models import yamnet
        scores = yamnet.get_tagger().clip_scores(list(waves))
        names = yamnet.class_names()
        return self.embed_text([", ".join(names[i] for i in np.argsort(-row)[:3]) for row in scores])

    def embed_text(self, texts):
        from core.models import text_encoder
        return text_encoder.encode(list(texts))


@pytest.fixture
def tone_ws(ws, tmp_path):
    """Five 2 s tones, one per file (source "tones"), plus one 30 s recording cut into windows."""
    src = tmp_path / "tones"
    src.mkdir()
    for f in FREQS:
        sf.write(src / f"tone{f}.wav", tone(2.0, f), 16_000)
    (src / "meta.csv").write_text("filename,label\n" + "".join(f"tone{f}.wav,hz{f}\n" for f in FREQS))
    long = tmp_path / "long"
    long.mkdir()
    sf.write(long / "long440.wav", tone(30.0, 440, amp=0.2), 16_000)
    assert import_paths(ws, [src]).count("imported") == 5
    assert import_paths(ws, [long]).count("imported") == 1
    return ws


def clip_of(ws: Workspace, name: str) -> int:
    for rec in ws.catalog.recordings():
        if rec.original_name == name:
            return ws.catalog.clips(rec.id)[0].id
    raise KeyError(name)


def records(ws, embedder) -> dict[int, dict]:
    got = index.open_collection(ws, embedder).get(include=["metadatas"])
    return {int(i): m for i, m in zip(got["ids"], got["metadatas"])}


# -- index ---------------------------------------------------------------------------------------------
def test_sync_is_incremental_and_follows_the_catalogue(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    clips = ws.catalog.clip_ids()
    assert len(clips) == 5 + 4                       # 30 s at 10 s windows with 1 s overlap → 4 windows

    seen = []
    report = index.sync(ws, emb, batch_size=4, progress=lambda d, t, m: seen.append((d, t)))
    assert (report.embedded, report.updated, report.deleted, report.failed) == (9, 0, 0, [])
    assert seen[0] == (0, 9) and seen[-1] == (9, 9)
    col = index.open_collection(ws, emb)
    assert col.count() == 9
    assert col.metadata["model_id"] == "test/tone:v1" and col.metadata["dim"] == 16
    assert col.metadata["checksum"].startswith("probe:")
    assert "test-tone-v1" in col.name
    assert index.is_current(ws, emb)

    meta = records(ws, emb)[clip_of(ws, "tone1000.wav")]
    assert meta["name"] == "tone1000.wav" and meta["source"] == "tones" and meta["status"] == "pending"
    assert meta["meta_label"] == "hz1000" and meta["duration"] == pytest.approx(2.0)
    assert meta["caption"] == "" and "tags" not in meta

    # nothing changed: nothing embedded
    calls = emb.audio_calls
    assert index.sync(ws, emb).unchanged == 9 and emb.audio_calls == calls
    assert index.ensure_current(ws, emb) is None

    # caption + review change: metadata rewritten, audio not re-embedded
    cid = clip_of(ws, "tone200.wav")
    ws.catalog.add_caption(cid, "a low hum", "teacher", tags={"Hum": 0.9, "Drone": 0.5, "Buzz": 0.2})
    ws.catalog.save_review(cid, status="accepted", expected_version=0, annotator="ann")
    assert not index.is_current(ws, emb)
    report = index.ensure_current(ws, emb)
    assert (report.embedded, report.updated, report.unchanged) == (0, 1, 8) and emb.audio_calls == calls
    meta = records(ws, emb)[cid]
    assert (meta["caption"], meta["tags"], meta["status"]) == ("a low hum", ["hum", "drone", "buzz"], "accepted")

    # a later caption without tags: the old tags must not survive Chroma's metadata merge
    ws.catalog.add_caption(cid, "a steady low tone", "teacher")     # a re-caption (a draft would not publish)
    index.sync(ws, emb)
    meta = records(ws, emb)[cid]
    assert meta["caption"] == "a steady low tone" and "tags" not in meta

    # deleting clips deletes their vectors
    gone = [clip_of(ws, "tone5000.wav"), clip_of(ws, "long440.wav")]
    delete_clips(ws, gone)
    report = index.sync(ws, emb)
    assert report.deleted == 2 and report.embedded == 0
    ids, vectors = index.get_embeddings(ws, emb)
    assert ids == ws.catalog.clip_ids() and vectors.shape == (7, 16)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # rebuild recreates everything from the catalogue
    report = index.rebuild(ws, emb)
    assert report.rebuilt == "requested" and report.embedded == 7 and col.name == report.collection
    assert index.open_collection(ws, emb).count() == 7


def test_catalogue_change_marker_moves_on_every_kind_of_change(tone_ws):
    cat = tone_ws.catalog
    seen = [cat.change_marker()]

    def moved():
        seen.append(cat.change_marker())
        return seen[-1] != seen[-2]
    assert not moved()
    cat.add_caption(1, "a beep", "teacher")
    assert moved()
    cat.save_review(1, status="accepted", expected_version=0, annotator="a")
    assert moved()
    cat.save_review(1, status="rejected", expected_version=1, annotator="a")
    assert moved()
    rec = cat.get_clip(2).recording_id
    cat.update_recording_meta(rec, {"label": "a longer label"})
    assert moved()
    delete_clips(tone_ws, [3])
    assert moved()


def test_changed_weights_rebuild_and_models_have_separate_collections(tone_ws):
    ws = tone_ws
    index.sync(ws, ToneEmbedder())

    class Retrained(ToneEmbedder):       # same id, different outputs: vectors must not be mixed
        def embed_audio(self, waves):
            return np.roll(super().embed_audio(waves), 1, axis=1)
    report = index.sync(ws, Retrained())
    assert report.rebuilt and "weights" in report.rebuilt and report.embedded == 9

    other = ToneEmbedder("another-model")
    index.sync(ws, other, clip_ids=[1, 2])
    names = {i["model_id"]: i for i in index.list_indexes(ws)}
    assert names["test/tone:v1"]["count"] == 9 and names["another-model"]["count"] == 2
    assert not names["another-model"]["current"]          # a partial sync never claims to be current


def test_cancel_keeps_what_was_done_and_resumes(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    cancel = threading.Event()

    def progress(done, total, message):
        if done >= 2:
            cancel.set()
    report = index.sync(ws, emb, batch_size=2, progress=progress, cancel=cancel)
    assert report.cancelled and report.embedded == 2 and report.pending == 7
    assert index.open_collection(ws, emb).count() == 2 and not index.is_current(ws, emb)
    report = index.sync(ws, emb, max_new=3)                  # too many for a quick sync: left pending
    assert report.embedded == 0 and report.pending == 7 and not index.is_current(ws, emb)
    report = index.sync(ws, emb, max_new=7)
    assert report.embedded == 7 and report.unchanged == 2 and index.is_current(ws, emb)


def test_get_embeddings_indexes_only_what_is_missing(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    wanted = [clip_of(ws, "tone3000.wav"), clip_of(ws, "tone200.wav"), 9999]
    index.open_collection(ws, emb)                            # its checksum probe embeds one chirp
    before = emb.clips_embedded
    ids, vectors = index.get_embeddings(ws, emb, wanted)
    assert ids == wanted[:2] and emb.clips_embedded - before == 2
    assert index.open_collection(ws, emb).count() == 2
    assert ToneEmbedder.band(3000) == int(np.argmax(vectors[0]))


def test_unreadable_audio_is_reported_not_fatal(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    rec = next(r for r in ws.catalog.recordings() if r.original_name == "tone440.wav")
    ws.audio_path(rec.sha256).write_bytes(b"not flac")
    report = index.sync(ws, emb)
    assert report.embedded == 8 and [c for c, _ in report.failed] == [clip_of(ws, "tone440.wav")]


# -- search --------------------------------------------------------------------------------------------
def test_text_audio_and_more_like_this(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    index.sync(ws, emb)
    page = search.search_text(ws, emb, "a 1000 Hz beep", k=3)
    assert page.hits[0].name == "tone1000.wav" and page.hits[0].model_score == pytest.approx(1.0, abs=1e-3)
    assert page.hits[0].meta == {"label": "hz1000"} and page.has_more and len(page.hits) == 3

    page = search.search_audio(ws, emb, tone(3.0, 3000, amp=0.1), k=2)
    assert page.hits[0].name == "tone3000.wav"

    wav = ws.root / "q.wav"                                  # a long file is windowed and averaged
    sf.write(wav, tone(25.0, 5000, amp=0.1), 16_000)
    assert search.search_audio(ws, emb, str(wav), k=1).hits[0].name == "tone5000.wav"

    first = clip_of(ws, "long440.wav")
    page = search.more_like_this(ws, emb, first, k=4)
    assert first not in [h.clip_id for h in page.hits]
    assert {h.name for h in page.hits[:4]} == {"long440.wav", "tone440.wav"}   # the other windows + the short tone

    with pytest.raises(KeyError):
        search.more_like_this(ws, emb, 12345)
    with pytest.raises(ValueError):
        search.search_text(ws, emb, "  ")


def test_paging_covers_every_clip_once(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    index.sync(ws, emb)
    seen, offset = [], 0
    while True:
        page = search.search_text(ws, emb, "440 Hz", k=4, offset=offset)
        seen += [h.clip_id for h in page.hits]
        if not page.has_more:
            break
        offset += 4
    assert sorted(seen) == ws.catalog.clip_ids() and offset == 8
    scores = [h.score for h in search.search_text(ws, emb, "440 Hz", k=9).hits]
    assert scores == sorted(scores, reverse=True)


def test_filters(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    cid = clip_of(ws, "tone200.wav")
    ws.catalog.add_caption(cid, "hum", "teacher", tags={"Hum": 0.9})
    ws.catalog.save_review(cid, status="accepted", expected_version=0, annotator="a")
    index.sync(ws, emb)

    def names(**kw):
        page = search.search_text(ws, emb, "440 Hz", k=20, filters=search.Filters(**kw))
        return sorted({h.name for h in page.hits}), page

    assert names(status=["accepted"])[0] == ["tone200.wav"]
    assert names(tags=["HUM", "nothing"])[0] == ["tone200.wav"]
    assert names(source=["long"])[0] == ["long440.wav"]
    assert names(min_duration=5)[0] == ["long440.wav"]
    assert "long440.wav" not in names(max_duration=5)[0]
    rec = next(r.id for r in ws.catalog.recordings() if r.original_name == "long440.wav")
    _, page = names(recording_id=rec, window_start=12, window_end=20)      # windows 0–10, 9–19, 18–28, 20–30
    assert sorted((h.start, h.end) for h in page.hits) == [(9.0, 19.0), (18.0, 28.0)]
    assert names(meta={"label": "hz3000"})[0] == ["tone3000.wav"]
    assert names(status=["rejected"])[0] == []
    assert search.Filters().where() is None


def test_zero_shot(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    index.sync(ws, emb)
    result = search.classify(ws, emb, "200 Hz, 1000 Hz, 3000 Hz", clip_id=clip_of(ws, "tone1000.wav"))
    assert result.ranked()[0][0] == "1000 Hz" and sum(result.probs) == pytest.approx(1.0)
    assert result.scale == search.DEFAULT_SCALE and result.templates == list(search.DEFAULT_TEMPLATES)

    soft = search.classify(ws, emb, ["200 Hz", "1000 Hz"], source=tone(2.0, 200), scale=1.0,
                           templates="a {label} tone\n{label}")
    assert soft.labels[int(np.argmax(soft.probs))] == "200 Hz" and max(soft.probs) < 0.9   # a small scale is soft
    assert soft.templates == ["a {label} tone", "{label}"]

    class WithTemperature(ToneEmbedder):
        logit_scale = np.log(20.0)            # CLIP convention: stored in log space
    assert search.model_scale(WithTemperature()) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        search.classify(ws, emb, "only one", clip_id=1)
    assert search.parse_labels("dog, cat\n dog,, rain ") == ["dog", "cat", "rain"]


def test_hybrid_blends_caption_similarity(tone_ws):
    ws, emb = tone_ws, ToneEmbedder()
    captions = {"tone200.wav": "a dog barking loudly", "tone1000.wav": "rain falling on a tin roof",
                "tone3000.wav": "a kettle whistling"}
    for name, text in captions.items():
        ws.catalog.add_caption(clip_of(ws, name), text, "teacher")
    report = index.sync(ws, emb)
    assert report.captions_embedded == 3

    plain = search.search_text(ws, emb, "rain on a roof", k=3, with_caption_scores=True)
    assert plain.hits[0].caption_score is not None or plain.hits[0].caption == ""
    hybrid = search.search_text(ws, emb, "rain on a roof", k=3, hybrid_weight=0.7)
    top = hybrid.hits[0]
    assert top.name == "tone1000.wav" and top.caption_score > 0.5
    # every clip is in the candidate pool here, so the whole page reproduces core.pipeline.fusion on the pool
    every = search.search_text(ws, emb, "rain on a roof", k=50, hybrid_weight=0.7).hits
    audio_s = np.array([h.model_score for h in every])
    caption_s = np.array([np.nan if h.caption_score is None else h.caption_score for h in every])
    want = fusion.in_units_of(fusion.fuse(audio_s, caption_s, 0.7), audio_s)
    assert [h.score for h in every] == pytest.approx(list(want), abs=1e-5)
    assert [h.score for h in every] == sorted((h.score for h in every), reverse=True)
    assert all(h.caption_score is None for h in hybrid.hits if not h.caption)
    # captions follow the catalogue: a rewritten caption is re-encoded, a deleted clip dropped
    ws.catalog.save_review(clip_of(ws, "tone3000.wav"), status="edited", expected_version=0, annotator="ann",
                           new_text="heavy rain on a metal roof")
    delete_clips(ws, [clip_of(ws, "tone200.wav")])
    report = index.sync(ws, emb)
    assert (report.captions_embedded, report.captions_deleted) == (1, 1)
    names = [h.name for h in search.search_text(ws, emb, "rain on a roof", k=2, hybrid_weight=1.0).hits]
    assert set(names) == {"tone1000.wav", "tone3000.wav"}
    like = search.more_like_this(ws, emb, clip_of(ws, "tone1000.wav"), k=1, hybrid_weight=1.0)
    assert like.hits[0].name == "tone3000.wav"
    # deleting vectors right away (before the catalogue sync) empties both stores for that clip
    index.delete_vectors(ws, [clip_of(ws, "tone3000.wav")])
    assert index.open_collection(ws, emb).count() == 7 and index.captions_collection(ws).count() == 1



def test_the_index_holds_published_captions_only(tone_ws):
    """Search results and hybrid scores read what visitors may read (core/auth/published.py): an annotator's
    undecided draft and a rejected caption never reach the index."""
    ws, emb = tone_ws, ToneEmbedder()
    draft, rejected, edited = (clip_of(ws, f"tone{f}.wav") for f in (200, 1000, 3000))
    for cid in (draft, rejected, edited):
        ws.catalog.add_caption(cid, "a dog barking", "teacher")
    ws.catalog.add_caption(draft, "secret draft about a cat", "annotator")
    ws.catalog.save_review(rejected, status="rejected", expected_version=0, annotator="ann", reason="wrong")
    ws.catalog.save_review(edited, status="edited", expected_version=0, annotator="ann", new_text="church bells")
    index.sync(ws, emb)
    meta = records(ws, emb)
    assert (meta[draft]["caption"], meta[rejected]["caption"], meta[edited]["caption"]) == \
        ("a dog barking", "", "church bells")
    assert meta[rejected]["status"] == "rejected"          # annotators still filter by status
    held = index.captions_collection(ws).get(include=[])
    assert str(rejected) not in held["ids"]
    hits = search.search_text(ws, emb, "a cat", k=9, hybrid_weight=1.0).hits
    assert all("secret" not in h.caption for h in hits)

# -- server mode ----------------------------------------------------------------------------------------
@pytest.fixture
def chroma_server(tmp_path):
    exe = Path(sys.executable).parent / "chroma"
    if not exe.exists():
        exe = shutil.which("chroma")
    if not exe:
        pytest.skip("the chroma CLI is not installed")
    port = free_port()
    proc = subprocess.Popen([str(exe), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import chromadb
    deadline = time.time() + 60
    try:
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("chroma run did not start")
                time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_http_server_mode(tone_ws, chroma_server):
    from core.store.settings import load_settings
    settings = load_settings(workspace=tone_ws.root, chroma_mode="http", chroma_host="127.0.0.1",
                             chroma_port=chroma_server, seed_demo=False)
    ws = Workspace(tone_ws.root, settings)
    emb = ToneEmbedder()
    report = index.sync(ws, emb)
    assert report.embedded == 9
    assert not any(ws.chroma_dir.iterdir())                          # nothing went to the embedded store
    assert search.search_text(ws, emb, "3000 Hz", k=1).hits[0].name == "tone3000.wav"

    second = Workspace(tone_ws.root, settings)                         # another process would see the same
    index._clients.clear()
    assert index.is_current(second, emb)
    delete_clips(second, [clip_of(second, "tone3000.wav")])
    assert index.sync(second, emb).deleted == 1
    assert search.search_text(ws, emb, "3000 Hz", k=1).hits[0].name != "tone3000.wav"


# -- CLI --------------------------------------------------------------------------------------------------
def test_cli_index_and_search(tone_ws, monkeypatch, capsys):
    from core.__main__ import main
    emb = ToneEmbedder()
    monkeypatch.setattr(index, "resolve_embedder", lambda ws, model="active", **kw: emb)
    root = str(tone_ws.root)
    assert main(["index", "--workspace", root]) == 0
    assert "9 embedded" in capsys.readouterr().out
    assert main(["search", "1000 Hz", "--k", "2", "--json", "--workspace", root]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hits"][0]["name"] == "tone1000.wav" and len(out["hits"]) == 2 and out["has_more"]
    assert main(["search", "--clip", "1", "--labels", "200 Hz,1000 Hz", "--json", "--workspace", root]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["top"] == "1000 Hz"                                    # clip 1 is tone1000.wav (sorted import)
    assert main(["search", "440 Hz", "--source", "long", "--window", "0", "5", "--workspace", root]) == 0
    text = capsys.readouterr().out
    assert "long440.wav [0.0–10.0 s]" in text and text.count("score") == 1
    assert main(["index", "--rebuild", "--json", "--workspace", root]) == 0
    assert json.loads(capsys.readouterr().out)["rebuilt"] == "requested"


def test_resolve_embedder_explains_a_missing_model(ws, monkeypatch, tmp_path):
    from core.models import registry
    with pytest.raises(index.IndexUnavailable, match="'no-such-model' is not available"):
        index.resolve_embedder(ws, "no-such-model")
    monkeypatch.setattr(registry, "SHIPPED_DIR", tmp_path / "no-shipped-student")   # nothing active, nothing shipped
    with pytest.raises(index.IndexUnavailable, match="no student model"):
        index.resolve_embedder(ws, "active")


# -- real clips ------------------------------------------------------------------------------------------
def test_real_animal_clips_with_the_prior_model(demo_ws):
    ws, emb = demo_ws, PriorEmbedder()
    assert index.sync(ws, emb).embedded == 10
    labels = {}
    for rec in ws.catalog.recordings():
        labels[ws.catalog.clips(rec.id)[0].id] = rec.meta["label"]
    hits = 0
    for cid, label in labels.items():
        page = search.search_text(ws, emb, f"the sound of a {label}", k=3)
        hits += cid in [h.clip_id for h in page.hits]
    assert hits >= 5, f"text→audio R@3 {hits}/10 (chance: 3)"
    correct = sum(search.classify(ws, emb, sorted(set(labels.values())), clip_id=cid).ranked()[0][0] == label
                  for cid, label in labels.items())
    assert correct >= 4, f"zero-shot {correct}/10 (chance: 1)"


def test_a_saved_student_checkpoint_indexes_and_searches(demo_ws, tmp_path):
    """The real model path: a student checkpoint folder, resolved by name through core.models.registry."""
    student = pytest.importorskip("core.models.student")
    folder = student.Student().save(tmp_path / "student")
    ws = demo_ws
    emb = index.resolve_embedder(ws, str(folder))
    assert emb.dim == index.resolve_embedder(ws, str(folder)).dim        # cached, same object
    report = index.sync(ws, emb)
    assert report.embedded == 10 and not report.failed
    col = index.open_collection(ws, emb)
    assert col.metadata["model_id"] == emb.model_id and col.metadata["checksum"].startswith("digest:")
    page = search.search_text(ws, emb, "a dog barking", k=10)
    assert len(page.hits) == 10 and [h.score for h in page.hits] == sorted((h.score for h in page.hits), reverse=True)
    result = search.classify(ws, emb, "dog, cat, cow", clip_id=page.hits[0].clip_id)
    assert result.scale == pytest.approx(1 / 0.07, rel=1e-3) and sum(result.probs) == pytest.approx(1.0)
    ws.catalog.register_model(emb.model_id, str(folder))                # the Map tab asks by model id
    ids, vectors = index.get_embeddings(ws, emb.model_id)
    assert ids == ws.catalog.clip_ids() and vectors.shape == (10, emb.dim)


# -- the Search tab ---------------------------------------------------------------------------------------
def test_search_tab_through_gradio_client(tone_ws, app_factory, monkeypatch, tmp_path):
    from gradio_client import Client, handle_file

    import ui.search
    from ui.state import AppState
    emb = ToneEmbedder()
    monkeypatch.setattr(index, "resolve_embedder", lambda ws, model="active", **kw: emb)
    monkeypatch.setattr(ui.search, "PAGE_SIZE", 4)
    client = Client(app_factory(AppState(tone_ws.settings)), verbose=False)
    none = [[], [], [], None, None, None, None, None]

    # the first search indexes the workspace by itself
    out = client.predict("active", "a 1000 Hz beep", 0.0, *none, api_name="/search_text")
    results, summary = out[0], out[1]
    assert results["hits"][0]["name"] == "tone1000.wav" and len(results["hits"]) == 4 and results["has_more"]
    assert "Results 1–4" in summary
    player, text = out[2], out[3]                                    # slot 1 (states and groups are not in the API)
    assert "<audio" in player and ".wav" in player and "tone1000.wav" in text and "model 1.000" in text
    out = client.predict("active", 0.0, *none, api_name="/search_next_page")
    assert "Results 5–8" in out[1] and out[0]["offset"] == 4
    fifth = out[0]["hits"][0]["clip_id"]

    out = client.predict("active", 0.0, *none, api_name="/search_more_like_result_1")   # slot 1 of page 2
    assert f"for clip {fifth}" in out[1] and fifth not in [h["clip_id"] for h in out[0]["hits"]]
    assert out[-1] == fifth                                          # now the selected clip

    out = client.predict("active", "440 Hz", 0.0, ["pending"], ["long"], [], 5, None, None, 0, 15,
                         api_name="/search_text")
    assert [(h["start"], h["end"]) for h in out[0]["hits"]] == [(0.0, 10.0), (9.0, 19.0)]

    wav = tmp_path / "query.wav"
    sf.write(wav, tone(2.0, 3000, amp=0.1), 16_000)
    out = client.predict("active", handle_file(str(wav)), *none, api_name="/search_sound")
    assert out[0]["hits"][0]["name"] == "tone3000.wav"

    plot, zero = client.predict("active", "200 Hz, 1000 Hz, 3000 Hz", "the sound of {label}", None,
                                handle_file(str(wav)), api_name="/search_classify")
    assert zero["top"] == "3000 Hz" and plot is not None
    zero = client.predict("active", "200 Hz, 1000 Hz", "{label}", 1, None, api_name="/search_classify")[1]
    assert zero["top"] == "1000 Hz"

    assert "9** of **9** clips" in client.predict("active", api_name="/search_index_status")
    delete_clips(tone_ws, [1])
    assert "8** of **8** clips" in client.predict("active", api_name="/search_update_index")
    with pytest.raises(Exception, match="Type a description"):
        client.predict("active", " ", 0.0, *none, api_name="/search_text")
