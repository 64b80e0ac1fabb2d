"""The embedding map: projection, caching, colouring, outliers, HTML export, the Map tab."""
from __future__ import annotations

import csv
import time

import numpy as np
import pytest
import soundfile as sf

from core.pipeline import projection
from core.pipeline.projection import ProjectionParams
from tests.conftest import tone

BANDS = [0, 150, 300, 600, 1200, 2400, 4800, 8000]
PITCH = {"low": 200.0, "mid": 900.0, "high": 3500.0}


class ToneEmbedder:
    """A test double that really listens: log band energies of the wave; a caption maps to
    the embedding of the pitch it names ("a low hum" → a 200 Hz tone)."""

    def __init__(self, model_id: str = "tone-v1", warp: float = 1.0):
        self.model_id = model_id
        self.dim = len(BANDS) - 1
        self.warp = warp          # a second "model" weighs the bands differently

    def embed_audio(self, waves):
        out = []
        for w in waves:
            spectrum = np.abs(np.fft.rfft(w)) ** 2
            freqs = np.fft.rfftfreq(len(w), 1 / 16_000)
            e = np.array([spectrum[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(BANDS, BANDS[1:])])
            v = np.log1p(e) ** self.warp
            out.append(v / (np.linalg.norm(v) + 1e-9))
        return np.asarray(out, dtype=np.float32)

    def embed_text(self, texts):
        pitch = [next((f for word, f in PITCH.items() if word in t), 440.0) for t in texts]
        return self.embed_audio([tone(1.0, f) for f in pitch])


def clustered(n_per: int = 30, groups: int = 4, dim: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim)) * 3
    labels = np.repeat(np.arange(groups), n_per)
    x = centres[labels] + rng.normal(size=(len(labels), dim))
    return np.arange(100, 100 + len(labels)), x.astype(np.float32), labels


# -- projection on arrays ---------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_projection_shapes_and_clusters_follow_the_data(dims, tmp_path):
    from sklearn.metrics import adjusted_rand_score

    ids, x, labels = clustered()
    seen = []
    p = projection.project(ids, x, ProjectionParams(dims=dims), model_id="m", cache_dir=tmp_path,
                           progress=lambda f, m: seen.append(f))
    assert p.coords.shape == (120, dims) and np.isfinite(p.coords).all()
    assert list(p.clip_ids) == list(ids) and p.total == 120 and not p.sampled and not p.cached
    assert adjusted_rand_score(labels, p.clusters) > 0.9           # HDBSCAN finds the four groups
    assert seen[-1] == 1.0 and seen == sorted(seen)                 # progress only moves forward


def test_projection_is_cached_by_model_clips_vectors_and_parameters(tmp_path):
    ids, x, _ = clustered()
    first = projection.project(ids, x, ProjectionParams(), model_id="m", cache_dir=tmp_path)
    started = time.perf_counter()
    again = projection.project(ids, x, ProjectionParams(), model_id="m", cache_dir=tmp_path)
    assert again.cached and time.perf_counter() - started < 0.5
    np.testing.assert_array_equal(first.coords, again.coords)
    np.testing.assert_array_equal(first.clusters, again.clusters)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    # any change of model, parameters, clip set or vectors is a new projection
    assert not projection.project(ids, x, ProjectionParams(), model_id="other", cache_dir=tmp_path).cached
    assert not projection.project(ids, x, ProjectionParams(min_dist=0.5), model_id="m", cache_dir=tmp_path).cached
    assert not projection.project(ids[:-1], x[:-1], ProjectionParams(), model_id="m", cache_dir=tmp_path).cached
    assert not projection.project(ids, x * 2, ProjectionParams(), model_id="m", cache_dir=tmp_path).cached
    projection.prune_cache(tmp_path, keep=2)          # derived data: old maps are pruned, newest kept
    assert len(list(tmp_path.glob("*.npz"))) == 2
    assert projection.project(ids, x * 2, ProjectionParams(), model_id="m", cache_dir=tmp_path).cached
    # a damaged cache file is recomputed, not fatal
    for f in tmp_path.glob("*.npz"):
        f.write_bytes(b"garbage")
    assert not projection.project(ids, x, ProjectionParams(), model_id="m", cache_dir=tmp_path).cached


def test_same_seed_same_map_and_sampling_above_the_limit():
    ids, x, _ = clustered()
    a = projection.project(ids, x, ProjectionParams(max_points=50, seed=7))
    b = projection.project(ids, x, ProjectionParams(max_points=50, seed=7))
    assert a.coords.shape == (50, 2) and a.sampled and a.total == 120
    assert "50 of 120" in a.note
    np.testing.assert_array_equal(a.clip_ids, b.clip_ids)
    np.testing.assert_allclose(a.coords, b.coords)
    assert set(a.clip_ids) <= set(ids) and list(a.clip_ids) == sorted(a.clip_ids)


def test_caption_points_share_the_projection():
    ids, x, labels = clustered(n_per=20, groups=3)
    text = x + 0.1
    text[:4] = np.nan                                 # clips without a caption
    p = projection.project(ids, x, ProjectionParams(include_text=True), text_embeddings=text)
    assert p.text_coords.shape == p.coords.shape
    assert np.isnan(p.text_coords[:4]).all() and np.isfinite(p.text_coords[4:]).all()
    # a caption lands next to its own clip's group, not another one
    centre = np.array([p.coords[labels == g].mean(axis=0) for g in range(3)])
    nearest = np.linalg.norm(p.text_coords[4:, None] - centre[None], axis=2).argmin(axis=1)
    assert (nearest == labels[4:]).mean() > 0.9


def test_tiny_inputs_do_not_fail():
    x = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    for n in (0, 1, 2, 6):
        p = projection.project(range(n), x[:n], ProjectionParams())
        assert p.coords.shape == (n, 2) and (p.clusters == -1).all()
    with pytest.raises(ValueError):
        projection.project(range(3), x[:2])
    with pytest.raises(ValueError):
        ProjectionParams(dims=4)


def test_exact_knn_matches_brute_force():
    from sklearn.metrics import pairwise_distances

    x = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        idx, dist = projection.exact_knn(x, 10, metric, block=64)
        full = pairwise_distances(x, metric=metric)
        expected = np.sort(full, axis=1)[:, :10]
        assert (idx[:, 0] == np.arange(300)).all() and np.allclose(dist[:, 0], 0, atol=1e-5)
        np.testing.assert_allclose(dist, expected, atol=1e-4)


def test_outliers_are_clips_far_from_their_caption():
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(40, 16))
    text = audio + 0.2 * rng.normal(size=(40, 16))
    text[7] = -audio[7]                               # a caption describing something else
    text[9] = np.nan                                  # no caption
    d = projection.caption_distances(audio, text)
    assert d[7] > 1.5 and np.isnan(d[9])
    flags = projection.find_outliers(d, z=3.0)
    assert flags.tolist() == [i == 7 for i in range(40)]
    assert not projection.find_outliers(np.full(10, 0.3)).any()


# -- the workspace view -----------------------------------------------------------------------------
@pytest.fixture
def tone_ws(ws, tmp_path):
    """24 one-second tones (low/mid/high), labelled, captioned by a teacher; one caption is wrong."""
    folder = tmp_path / "tones"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        label = ["low", "mid", "high"][i % 3]
        wave = tone(1.0, PITCH[label] * (1 + 0.03 * rng.normal())) + 0.01 * rng.normal(size=16_000)
        sf.write(folder / f"{label}_{i:02d}.wav", wave.astype(np.float32), 16_000)
        rows.append({"filename": f"{label}_{i:02d}.wav", "label": label})
    with open(folder / "meta.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["filename", "label"])
        writer.writeheader()
        writer.writerows(rows)
    from core.pipeline.importer import import_paths
    assert import_paths(ws, [folder]).count("imported") == 24
    words = {"low": ("a low hum", {"hum": 0.9, "drone": 0.5}), "mid": ("a mid beep", {"beep": 0.8}),
             "high": ("a high whistle", {"whistle": 0.95, "beep": 0.2})}
    for row in ws.catalog.clip_rows(projection_query(limit=100))[0]:
        label = row.recording.meta["label"]
        text, tags = words["high" if row.recording.original_name == "low_00.wav" else label]
        ws.catalog.add_caption(row.clip.id, text, "teacher", teacher="embedded", tags=tags)
    return ws


def projection_query(**kw):
    from core.store.catalog import ClipQuery
    return ClipQuery(**kw)


def clip_named(ws, name: str) -> int:
    return next(r.clip.id for r in ws.catalog.clip_rows(projection_query(limit=100))[0]
                if r.recording.original_name == name)


@pytest.fixture
def no_index(monkeypatch):
    """Embed straight from the audio with the test double: the map is tested apart from the vector store."""
    models = {"active": ToneEmbedder(), "tone-v1": ToneEmbedder(), "tone-v2": ToneEmbedder("tone-v2", warp=2.0)}
    monkeypatch.setattr(projection, "_index_module", lambda: None)
    monkeypatch.setattr(projection, "resolve_model", lambda ws, name="active": models[name])
    monkeypatch.setattr(projection, "model_choices", lambda ws: list(models))
    return models


def test_map_of_a_workspace_colours_and_outliers(tone_ws, no_index):
    ws = tone_ws
    mid = clip_named(ws, "mid_01.wav")
    review = ws.catalog.get_review(mid)
    ws.catalog.save_review(mid, status="edited", expected_version=review.version, annotator="ann",
                           new_text="a mid tone, slightly buzzing")
    data = projection.build_map(ws, "active", ProjectionParams(n_neighbors=8))
    p = data.points.set_index("clip_id")
    assert len(p) == 24 and {"x", "y", "caption", "tags", "top_tag", "status", "label", "cluster"} <= set(p.columns)
    assert data.fields[0] == "label" and data.default_color() == "label"
    too_many = data.points.assign(label=[f"label {i}" for i in range(24)])   # more than a legend can show
    assert projection.MapData("m", too_many, data.projection, ["label"]).default_color() == "top_tag"
    assert set(projection.BUILTIN_FIELDS) <= set(data.fields)
    # edited caption shown, its tags still the teacher's; status from the review
    assert p.loc[mid, "caption"] == "a mid tone, slightly buzzing" and p.loc[mid, "top_tag"] == "beep"
    assert p.loc[mid, "status"] == "edited" and p.loc[clip_named(ws, "mid_04.wav"), "status"] == "pending"
    assert p.loc[clip_named(ws, "high_02.wav"), "top_tag"] == "whistle"
    # the low tone captioned "a high whistle" is the one outlier
    wrong = clip_named(ws, "low_00.wav")
    assert p.index[p["outlier"]].tolist() == [wrong]
    assert p["caption_distance"].idxmax() == wrong
    # clusters follow the three pitches
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(p["label"], p["cluster"]) > 0.8
    # the table lists outliers first when asked, and filters
    table = projection.points_table(data, "label", outliers_only=True)
    assert table["clip"].tolist() == [wrong]
    assert set(projection.points_table(data, "label", query="whistle")["clip"]) == set(
        p.index[p["caption"].str.contains("whistle")])
    # a second build is served from the cache
    assert projection.build_map(ws, "active", ProjectionParams(n_neighbors=8)).projection.cached


def test_figures_for_every_field_2d_and_3d(tone_ws, no_index):
    import plotly.graph_objects as go

    data = projection.build_map(tone_ws, "active", ProjectionParams(n_neighbors=8, include_text=True))
    for field in data.fields:
        fig = projection.figure(data, field)
        assert fig.data, field
    fig = projection.figure(data, "label", selected=int(data.points["clip_id"].iloc[0]))
    names = [t.name for t in fig.data]
    assert {"low", "mid", "high", "caption outlier", "selected"} <= set(names)
    assert any(isinstance(t, go.Scatter) and "(caption)" in (t.name or "") for t in fig.data)
    hover = " ".join(str(t.customdata.tolist()) for t in fig.data if t.customdata is not None)
    assert "a low hum" in hover and "whistle" in hover
    assert not any(t.name == "caption outlier" for t in projection.figure(data, "label", highlight_outliers=False).data)
    continuous = projection.figure(data, "caption_distance")
    assert continuous.data[0].marker.colorscale is not None
    with pytest.raises(KeyError):
        projection.figure(data, "no-such-field")
    three = projection.build_map(tone_ws, "active", ProjectionParams(dims=3, n_neighbors=8))
    assert all(isinstance(t, go.Scatter3d) for t in projection.figure(three, "status").data)


def test_before_after_uses_the_same_clips_and_colours(tone_ws, no_index):
    a, b = projection.compare_maps(tone_ws, "tone-v1", "tone-v2", ProjectionParams(n_neighbors=8))
    assert a.model_id == "tone-v1" and b.model_id == "tone-v2"
    assert sorted(a.points["clip_id"]) == sorted(b.points["clip_id"])
    fig = projection.compare_figure(a, b, "label")
    left = {t.name: t.marker.color for t in fig.data if t.xaxis in (None, "x")}
    right = {t.name: t.marker.color for t in fig.data if t.xaxis == "x2"}
    assert {"low", "mid", "high"} <= set(left) and all(right[k] == left[k] for k in ("low", "mid", "high"))
    # b is rotated onto a: the same clip sits near the same place in both maps
    pa = a.points.set_index("clip_id")[["x", "y"]]
    pb = b.points.set_index("clip_id")[["x", "y"]].loc[pa.index]
    spread = np.linalg.norm(pa - pa.mean(), axis=1).mean()
    assert np.linalg.norm(pa.to_numpy() - pb.to_numpy(), axis=1).mean() < spread


def test_send_to_review_requeues_without_overwriting(tone_ws):
    ws = tone_ws
    done, pending = clip_named(ws, "mid_01.wav"), clip_named(ws, "mid_04.wav")
    ws.catalog.save_review(done, status="accepted", expected_version=0, annotator="ann")
    report = projection.send_to_review(ws, [done, pending, done], annotator="mapper", reason="map: outlier")
    assert report.sent == [done] and report.already_pending == [pending] and not report.conflicts
    assert projection.send_to_review(ws, [987654]).missing == [987654]      # a deleted clip is reported, not created
    after = ws.catalog.get_review(done)
    assert after.status == "pending" and after.version == 2 and after.reason == "map: outlier"
    assert ws.catalog.review_events(done)[-1].action == "send-to-review"
    # someone saves between our read and our write: their save stands
    ws.catalog.save_review(done, status="accepted", expected_version=2, annotator="ann")
    stale = ws.catalog.get_review(done)
    ws.catalog.save_review(done, status="rejected", expected_version=3, annotator="other")
    original = ws.catalog.get_review
    ws.catalog.get_review = lambda cid: stale if cid == done else original(cid)
    try:
        report = projection.send_to_review(ws, [done])
    finally:
        del ws.catalog.get_review
    assert report.conflicts == [done] and ws.catalog.get_review(done).status == "rejected"


def test_sent_back_clips_are_review_decisions(tone_ws):
    """Sending back goes through the review workflow: the history lists it, its sender can undo it,
    and in overlap review it still puts the clip itself back in everyone's queue."""
    from core.pipeline import review

    ws = tone_ws
    clip = clip_named(ws, "high_02.wav")
    review.accept(ws.catalog, clip, "ann", 0)
    assert projection.send_to_review(ws, [clip], annotator="ann").sent == [clip]
    assert review.history(ws.catalog, clip)[-1]["action"] == "send-to-review"
    assert review.undo(ws.catalog, clip, "ann", ws.catalog.get_review(clip).version).review.status == "accepted"

    review.set_overlap(ws.catalog, 2)
    other = clip_named(ws, "high_05.wav")
    ws.catalog.save_review(other, status="accepted", expected_version=0, annotator="lead")
    assert projection.send_to_review(ws, [other]).sent == [other]
    assert ws.catalog.get_review(other).status == "pending"


def test_cli_writes_standalone_html(tone_ws, no_index, tmp_path, capsys):
    from core.__main__ import main

    out = tmp_path / "map.html"
    args = ["--workspace", str(tone_ws.root), "project", "--out", str(out), "--color", "label", "--list-outliers"]
    assert main(args) == 0
    html = out.read_text()
    assert "plotly" in html.lower() and "a low hum" in html and len(html) > 1_000_000   # plotly.js inlined
    printed = capsys.readouterr().out
    assert "24 clips" in printed and "outlier clip" in printed and "wrote" in printed
    assert main(args) == 0 and "from cache" in capsys.readouterr().out
    compare = tmp_path / "compare.html"
    assert main(["--workspace", str(tone_ws.root), "project", "--out", str(compare), "--model", "tone-v1",
                 "--compare", "tone-v2", "--dims", "3"]) == 0
    assert "scene2" in compare.read_text()
    assert main(["--workspace", str(tone_ws.root), "project", "--out", str(out), "--color", "nope"]) == 1


# -- the tab, through gradio_client -------------------------------------------------------------------
def test_map_tab_through_gradio_client(tone_ws, no_index, app_factory, settings):
    from gradio_client import Client

    from ui.state import AppState

    client = Client(app_factory(AppState(settings)), verbose=False)
    plot, note, color, table = client.predict("active", "label", True, 2.5, 2, False, 8, 0.1, "cosine", 42,
                                              20000, api_name="/map_draw")
    assert "24 clips" in note and "1 caption outlier" in note
    assert color == "label" or color.get("value") == "label"
    rows = table["data"]
    assert len(rows) == 24 and table["headers"][:2] == ["clip", "label"]
    assert plot and "a low hum" in str(plot)

    # recolour and filter reuse the drawn map (session state), no new projection
    plot2, table2 = client.predict("status", True, "", False, api_name="/map_recolor")
    assert table2["headers"][1] == "status"
    only = client.predict("status", "", True, api_name="/map_filter")
    wrong = clip_named(tone_ws, "low_00.wav")
    assert [r[0] for r in only["data"]] == [wrong]

    audio, info = client.predict(wrong, api_name="/map_play")
    assert str(audio).endswith(".wav") and "a high whistle" in info and "outlier" in info

    tone_ws.catalog.save_review(wrong, status="accepted", expected_version=0, annotator="ann")
    message, table3 = client.predict(wrong, "status", "", False, api_name="/map_send_to_review")
    assert "1 sent to review" in message
    assert tone_ws.catalog.get_review(wrong).status == "pending"
    message, _ = client.predict("status", "", False, api_name="/map_send_outliers")
    assert "already pending" in message

    fig, compare_note = client.predict("tone-v1", "tone-v2", "label", True, 2.5, 2, False, 8, 0.1, "cosine", 42,
                                       20000, api_name="/map_compare")
    assert "tone-v1" in compare_note and "tone-v2" in compare_note and fig
