"""The review workflow: queue order, actions, conflicts, undo, history, bulk, overlap; the Review tab over HTTP."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import soundfile as sf

from core.pipeline import review
from core.store.catalog import MIGRATIONS, Catalog
from tests.conftest import tone

CONFIDENCES = [0.9, 0.2, 0.6, None, 0.4]


def make_clips(ws, tmp_path, confidences=CONFIDENCES) -> list[int]:
    """One short tone per confidence, each with a teacher caption (None: no confidence given)."""
    from core.pipeline.importer import import_paths
    folder = tmp_path / "tones"
    folder.mkdir(exist_ok=True)
    for i in range(len(confidences)):
        sf.write(folder / f"tone{i}.wav", tone(1.0, 220.0 * (i + 1)), 16_000)
    report = import_paths(ws, [folder])
    assert report.count("imported") == len(confidences), report.summary()
    ids = ws.catalog.clip_ids()
    for cid, conf in zip(ids, confidences):
        ws.catalog.add_caption(cid, f"a steady tone number {cid}", "teacher", teacher="embedded", model="yamnet-test",
                               prompt="composer v1", tags={"sine wave": 0.8}, confidence=conf)
    return ids


@pytest.fixture
def clips(ws, tmp_path):
    return make_clips(ws, tmp_path)


def test_queue_orders(ws, clips):
    cat = ws.catalog
    assert review.build_queue(cat) == clips
    low = review.build_queue(cat, "low-confidence")
    assert low == [clips[1], clips[4], clips[2], clips[0], clips[3]]     # no confidence goes last
    assert review.build_queue(cat, "high-confidence")[:3] == [clips[0], clips[2], clips[4]]
    r1 = review.build_queue(cat, "random", seed=1)
    assert r1 == review.build_queue(cat, "random", seed=1) and sorted(r1) == clips
    assert any(review.build_queue(cat, "random", seed=s) != r1 for s in range(2, 6))
    # decided clips leave the to-do queue; skipped ones come back after pending ones
    review.accept(cat, clips[0], "alice", 0)
    review.skip(cat, clips[1], "alice", 0)
    todo = review.build_queue(cat)
    assert todo == clips[2:] + [clips[1]]
    assert review.build_queue(cat, scope="all") == clips[2:] + [clips[1], clips[0]]
    with pytest.raises(ValueError):
        review.build_queue(cat, "disagreement")


class FakeEmbedder:
    """Audio = one-hot of the tone's pitch bucket; text says 'tone' for all but caption 3 (the disagreement)."""
    model_id, dim = "fake", 2

    def embed_audio(self, waves):
        return np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (len(waves), 1))

    def embed_text(self, texts):
        return np.array([[0.0, 1.0] if "odd" in t else [0.6, 0.8] for t in texts], dtype=np.float32)


def test_disagreement_order_uses_student_scores(ws, clips):
    ws.catalog.add_caption(clips[3], "an odd caption", "teacher", teacher="embedded", confidence=0.99)
    scores = review.disagreement_scores(ws, clips, FakeEmbedder(), use_index=False)
    assert scores[clips[3]] == pytest.approx(0.0) and scores[clips[0]] == pytest.approx(0.6)
    assert review.build_queue(ws.catalog, "disagreement", scores=scores)[0] == clips[3]
    # through the search index: the audio vectors are stored there, and the scores are the same
    assert review.disagreement_scores(ws, clips, FakeEmbedder()) == pytest.approx(scores)



def test_disagreement_hook_uses_the_active_student_or_stays_off(ws, monkeypatch):
    import core.models.registry
    fake = FakeEmbedder()
    monkeypatch.setattr(core.models.registry, "get_embedder", lambda name="active", ws=None, device="cpu": fake)
    assert review.active_embedder(ws) is fake

    def missing(name="active", ws=None, device="cpu"):
        raise FileNotFoundError("no shipped student")
    monkeypatch.setattr(core.models.registry, "get_embedder", missing)
    assert review.active_embedder(ws) is None                  # no student anywhere: the order is not offered


def test_actions_keep_provenance(ws, clips):
    cat = ws.catalog
    teacher = cat.captions(clips[0])[0]
    assert review.accept(cat, clips[0], "alice", 0).review.caption_id == teacher.id
    saved = review.edit(cat, clips[1], "alice", "  a low   hum ", 0).review
    caption = cat.get_caption(saved.caption_id)
    assert (saved.status, caption.text, caption.origin, caption.annotator) == (
        "edited", "a low hum", "annotator", "alice")
    saved = review.reject(cat, clips[2], "bob", 0, reason="clipped")
    assert (saved.review.status, saved.review.reason, saved.review.annotator) == ("rejected", "clipped", "bob")
    assert review.skip(cat, clips[3], "bob", 0).review.status == "skipped"
    # an "edit" that changes nothing is an accept, not a duplicate caption
    again = review.edit(cat, clips[4], "bob", cat.captions(clips[4])[0].text, 0).review
    assert again.status == "accepted" and len(cat.captions(clips[4])) == 1
    with pytest.raises(ValueError):
        review.edit(cat, clips[4], "bob", "   ", again.version)
    with pytest.raises(ValueError):
        review.accept(cat, clips[4], " ", again.version)          # anonymous decisions are refused


def test_two_annotators_race_and_no_edit_is_lost(ws, clips):
    cat = ws.catalog
    cid = clips[0]
    shown_to_alice = review.load_item(cat, cid).review.version
    shown_to_bob = review.load_item(cat, cid).review.version
    review.accept(cat, cid, "alice", shown_to_alice)
    with pytest.raises(review.ReviewConflict) as info:
        review.edit(cat, cid, "bob", "a whistle", shown_to_bob)
    both = info.value.versions(cat)
    assert both["theirs"]["annotator"] == "alice" and both["theirs"]["status"] == "accepted"
    assert both["theirs"]["caption"] == cat.captions(cid)[0].text
    assert both["mine"] == {"annotator": "bob", "status": "edited", "caption": "a whistle", "reason": None,
                            "action": "edit"}
    assert cat.get_review(cid).annotator == "alice" and len(cat.captions(cid)) == 1   # bob's save did nothing yet
    saved = review.keep_mine(cat, info.value)                                          # bob chooses his version
    assert saved.review.version == 2 and cat.get_caption(saved.review.caption_id).text == "a whistle"
    events = cat.review_events(cid)
    assert [(e.annotator, e.after["status"]) for e in events] == [("alice", "accepted"), ("bob", "edited")]


def test_undo_is_a_new_save_and_walks_back(ws, clips):
    cat = ws.catalog
    cid = clips[0]
    teacher = cat.captions(cid)[0]
    v = review.accept(cat, cid, "alice", 0).review.version
    v = review.edit(cat, cid, "alice", "a flute", v).review.version
    undone = review.undo(cat, cid, "alice", v).review
    assert (undone.status, undone.caption_id) == ("accepted", teacher.id)
    undone = review.undo(cat, cid, "alice", undone.version).review        # the accept goes too
    assert undone.status == "pending" and undone.caption_id == teacher.id
    assert review.load_item(cat, cid).caption.id == teacher.id                # not the edit's caption
    with pytest.raises(ValueError):
        review.undo(cat, cid, "alice", undone.version)                         # nothing left to undo
    assert [e.action for e in cat.review_events(cid)] == ["accept", "edit", "undo", "undo"]
    assert [c.text for c in cat.captions(cid)][-1] == "a flute"               # history kept
    # first review was an edit: undo brings back the teacher caption, not the edit
    v = review.edit(cat, clips[1], "bob", "a buzz", 0).review.version
    assert review.undo(cat, clips[1], "bob", v).review.caption_id == cat.captions(clips[1])[0].id
    # nobody undoes someone else's work
    v = review.reject(cat, clips[2], "carol", 0, reason="noise").review.version
    with pytest.raises(review.ReviewConflict):
        review.undo(cat, clips[2], "bob", v)


def test_history_and_one_click_revert(ws, clips):
    cat = ws.catalog
    cid = clips[0]
    teacher = cat.captions(cid)[0]
    v = review.edit(cat, cid, "alice", "a whistle", 0).review.version
    v = review.edit(cat, cid, "bob", "a high whistle", v).review.version
    saved = review.revert(cat, cid, teacher.id, "alice", v).review
    assert saved.status == "accepted" and saved.caption_id == teacher.id
    rows = review.history(cat, cid)
    assert [(r["who"], r["action"]) for r in rows] == [("alice", "edit"), ("bob", "edit"), ("alice", "revert")]
    assert rows[1]["before"] == "edited: a whistle" and rows[1]["after"] == "edited: a high whistle"
    with pytest.raises(ValueError):
        review.revert(cat, cid, cat.captions(clips[1])[0].id, "alice", saved.version)   # another clip's caption


def test_progress_and_guidelines(ws, clips):
    cat = ws.catalog
    review.accept(cat, clips[0], "alice", 0)
    review.reject(cat, clips[1], "alice", 0)
    review.accept(cat, clips[2], "bob", 0)
    p = review.progress(cat, "alice")
    assert (p.total, p.reviewed, p.pending) == (5, 3, 2)
    assert p.mine == {"accepted": 1, "rejected": 1} and p.mine_today == 2
    assert p.by_annotator["bob"] == {"accepted": 1}
    assert "Accept" in review.guidelines(cat)
    assert review.set_guidelines(cat, "# Ours\nBe brief.") == "# Ours\nBe brief.\n"
    assert Catalog(cat.path).get_value(review.GUIDELINES_KEY).startswith("# Ours")   # stored in the catalogue


def test_bulk_preview_then_apply(ws, clips):
    cat = ws.catalog
    preview = review.preview_bulk(cat, "accept", review.BulkFilter(min_confidence=0.5))
    assert sorted(c for c, _, _ in preview.targets) == [clips[0], clips[2]] and preview.count == 2
    assert {row["clip"] for row in preview.sample} == {clips[0], clips[2]}
    assert cat.get_review(clips[0]).status == "pending"                           # preview changes nothing
    review.edit(cat, clips[2], "bob", "a chime", 0)                               # bob gets there first
    result = review.apply_bulk(cat, preview, "lead")
    assert result.applied == 1 and result.conflicts == [clips[2]]
    assert cat.get_review(clips[2]).annotator == "bob"                            # his edit survives
    rejected = review.apply_bulk(cat, review.preview_bulk(cat, "reject", review.BulkFilter(max_confidence=0.3)),
                                 "lead", reason="too unsure")
    assert rejected.applied == 1 and cat.get_review(clips[1]).reason == "too unsure"
    reset = review.preview_bulk(cat, "reset")
    assert reset.count == 3
    review.apply_bulk(cat, reset, "lead")
    assert review.progress(cat).reviewed == 0
    assert [e.action for e in cat.review_events(clips[0])] == ["bulk accept", "bulk reset"]


def test_fleiss_and_cohen_kappa():
    # Fleiss (1971) worked example from Wikipedia: 10 items, 14 raters, 5 categories → 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert review.fleiss_kappa(table) == pytest.approx(0.210, abs=1e-3)
    assert review.cohen_kappa([1, 1, 0, 0], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert review.cohen_kappa([1, 1], [1, 1]) is None                              # one category: undefined


def fake_encode(texts):
    """Texts with a shared first word are similar; others orthogonal (keeps the test model-free)."""
    words = sorted({t.split()[0] for t in texts})
    return np.array([np.eye(len(words))[words.index(t.split()[0])] for t in texts], dtype=np.float32)


def test_overlap_consensus_agreement_and_lead(ws, clips):
    cat = ws.catalog
    review.set_overlap(cat, 2)
    review.accept(cat, clips[0], "alice", 0)
    assert cat.get_review(clips[0]).status == "pending"                 # one person is not enough
    assert clips[0] in review.build_queue(cat, annotator="bob") and clips[0] not in review.build_queue(
        cat, annotator="alice")
    review.accept(cat, clips[0], "bob", 0)
    settled = cat.get_review(clips[0])
    assert (settled.status, settled.annotator) == ("accepted", review.CONSENSUS)
    # alice edits, and bob does not see her caption
    review.edit(cat, clips[1], "alice", "zebra noises", 0)
    assert review.load_item(cat, clips[1], "bob").caption.origin == "teacher"
    review.reject(cat, clips[1], "bob", 0, reason="noise")
    review.edit(cat, clips[2], "alice", "whistle high", 0)
    review.edit(cat, clips[2], "bob", "kettle boiling", 0)
    review.reject(cat, clips[3], "alice", 0)
    review.reject(cat, clips[3], "bob", 0)
    assert cat.get_review(clips[3]).status == "rejected"
    report = review.agreement(cat, encode=fake_encode)
    assert report.items == 4 and report.annotators == ["alice", "bob"]
    assert {d.clip_id for d in report.disagreements} == {clips[1], clips[2]}
    kappa, shared = report.cohen_kappa["alice / bob"]
    assert shared == 4 and kappa == pytest.approx(0.5)        # verdicts agree on 3 of 4, p_e = 0.5
    assert report.fleiss_kappa is not None and report.caption_similarity is not None
    # a lead settles the disagreement by keeping bob's decision
    lead = review.resolve(cat, clips[1], "lead", cat.get_review(clips[1]).version, take="bob").review
    assert (lead.status, lead.reason, lead.annotator) == ("rejected", "noise", "lead")
    # undo in overlap review takes back only your own annotation
    review.undo(cat, clips[2], "alice", 0)
    assert cat.current_annotations()[clips[2]]["alice"].status == "pending"
    assert cat.current_annotations()[clips[2]]["bob"].status == "edited"


def test_schema_v1_upgrades_to_v2_keeping_data(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO kv(key, value) VALUES('review.guidelines', 'old rules')")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    cat = Catalog(path)
    assert cat.schema_version == len(MIGRATIONS) >= 2
    assert cat.get_value("review.guidelines") == "old rules" and cat.annotations() == []


def test_review_tab_over_http(app_factory, settings, tmp_path):
    """Two browsers (gradio_client sessions) race on one clip; the loser sees both versions and chooses."""
    import httpx
    from gradio_client import Client

    from app import head_html
    from ui.state import AppState

    state = AppState(settings)
    ids = make_clips(state.ws, tmp_path)
    url = app_factory(state)
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    # outputs as a client sees them (State is not sent): header 0, player 1, spectrogram 2, teacher 3,
    # caption 4, reason 5, status 6, counters 7, conflict text 8, changes 9, captions 10 (a Group has no value)
    first = alice.predict("alice", "low-confidence", "todo", 0, api_name="/review_load_queue")
    assert f"<b>Clip {ids[1]}</b>" in first[0]                                  # lowest confidence first
    assert "gradio_api/file=" in first[1] and first[4] == f"a steady tone number {ids[1]}"
    audio_url = url + first[1].split("src='")[1].split("'")[0]
    assert httpx.get(audio_url).status_code == 200                               # the player's file is served
    bob.predict("bob", "low-confidence", "todo", 0, api_name="/review_load_queue")

    after = alice.predict("alice", first[4], "", api_name="/review_accept")
    assert "accepted by alice" in after[6] and f"<b>Clip {ids[4]}</b>" in after[0]   # moved on
    raced = bob.predict("bob", "a rising whistle", "", api_name="/review_edit")
    assert "Conflict" in raced[6] and "alice" in raced[8] and "a rising whistle" in raced[8]
    assert raced[4] == "a rising whistle"                                        # bob's text is still on screen
    assert state.ws.catalog.get_review(ids[1]).annotator == "alice"
    kept = bob.predict("bob", api_name="/review_keep_mine")
    assert "yours kept" in kept[6]
    final = state.ws.catalog.get_review(ids[1])
    assert final.annotator == "bob" and state.ws.catalog.get_caption(final.caption_id).text == "a rising whistle"
    assert [e.annotator for e in state.ws.catalog.review_events(ids[1])] == ["alice", "bob"]

    undone = bob.predict("bob", api_name="/review_undo")                          # back to alice's accept
    assert "accepted again" in undone[6] and state.ws.catalog.get_review(ids[1]).annotator == "bob"
    assert state.ws.catalog.get_review(ids[1]).caption_id == state.ws.catalog.captions(ids[1])[0].id
    rejected = alice.predict("alice", "", "hum only", api_name="/review_reject")
    assert "rejected" in rejected[6] and state.ws.catalog.get_review(ids[4]).reason == "hum only"
    back = alice.predict("alice", api_name="/review_previous")
    assert f"<b>Clip {ids[4]}</b>" in back[0] and "hum only" in back[0]
    assert "**You (alice)** rejected 1 · today 2" in back[7]          # bob's undo made the accept his save

    history = alice.predict("alice", api_name="/review_history")        # opening the accordion fills it
    assert [row[2] for row in history[9]["data"]] == ["reject"]
    assert history[10]["data"][0][5] == "✔ current"
    edited = alice.predict("alice", "a deep hum", "", api_name="/review_edit")
    assert "edited" in edited[6]
    alice.predict("alice", api_name="/review_previous")
    teacher_id = state.ws.catalog.captions(ids[4])[0].id
    reverted = alice.predict("alice", teacher_id, api_name="/review_revert")
    assert "reverted" in reverted[6] and state.ws.catalog.get_review(ids[4]).caption_id == teacher_id
    assert [row[2] for row in reverted[9]["data"]] == ["reject", "edit", "revert"]

    # bulk: preview with a count, then apply; guidelines; overlap setting and agreement
    msg, sample = alice.predict("accept", 0.5, 1.0, "", "(any)", "(default)",
                                 api_name="/review_bulk_preview")
    assert msg.startswith("**2 clips**") and {row[0] for row in sample["data"]} == {ids[0], ids[2]}
    assert state.ws.catalog.get_review(ids[0]).status == "pending"                # a preview changes nothing
    msg = alice.predict("alice", "", api_name="/review_bulk_apply")
    assert "2 clips saved" in msg and state.ws.catalog.get_review(ids[0]).status == "accepted"
    shown, _ = alice.predict("# Rules\nListen twice.", api_name="/review_save_guidelines")
    assert shown.startswith("# Rules") and review.guidelines(state.ws.catalog).startswith("# Rules")
    assert "2 people" in alice.predict(2, api_name="/review_set_overlap") and review.overlap(state.ws.catalog) == 2
    md, _ = alice.predict(api_name="/review_agreement")
    assert md.startswith("**0 clips** judged by two people")
    alice.predict(1, api_name="/review_set_overlap")

    message, archive = alice.predict("jsonl", str(tmp_path / "ui-export"), [], api_name="/review_export")
    assert message.startswith("✔ exported 5 clips") and archive.endswith(".zip")
    assert "hearsayReviewKeys" in head_html() and "hearsayReviewKeys" in httpx.get(url).text
    for button in ("review-accept", "review-save", "review-reject", "review-skip", "review-undo",
                   "review-next", "review-prev"):
        assert button in head_html()                                              # every action has a key
