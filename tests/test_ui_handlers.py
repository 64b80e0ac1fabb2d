"""The tabs' event handlers are plain methods: called here without a server (ui/review.py ReviewEvents)."""
from ui.review import VIEW, ReviewEvents, new_session
from ui.state import AppState

from tests.test_review import make_clips


def no_progress(*args, **kwargs):
    return None


def test_review_handlers_run_without_a_server(settings, tmp_path):
    state = AppState(settings)
    ids = make_clips(state.ws, tmp_path)
    ev = ReviewEvents(state)
    out = ev.load_queue(new_session(), "alice", "low-confidence", "todo", 0, progress=no_progress)
    assert len(out) == len(VIEW)
    sess = out[0]
    assert f"<b>Clip {ids[1]}</b>" in out[1] and f"{len(sess['queue'])} clips in the queue" in out[7]
    out = ev.accept(sess, "alice", out[5], "")
    assert "accepted by alice" in out[7] and state.ws.catalog.get_review(ids[1]).status == "accepted"
    out = ev.undo(out[0], "alice")
    assert "again" in out[7] and state.ws.catalog.get_review(ids[1]).status == "pending"
    assert ev.history_closed(out[0], "alice")[0]["history_open"] is False
