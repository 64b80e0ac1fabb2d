"""The map plays what you click (ui/map.py's JS bridge → map_pick), and visitors see only what is published."""
from __future__ import annotations

import json

import pytest

from core.pipeline import projection, review
from core.auth.access import AccessPolicy, parse_users
from core.pipeline.projection import ProjectionParams
from tests.test_projection import clip_named, no_index, tone_ws  # noqa: F401  (fixtures)
from ui.map import picked_ids

DRAW = ("active", "label", True, 2.5, 2, False, 8, 0.1, "cosine", 42, 20000)    # map_draw's inputs


def app_error(call) -> str:
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as info:
        call()
    return str(info.value)


@pytest.fixture
def reviewed(tone_ws):
    """Three clips an annotator worked on: a pending draft, a rejected clip, an edited (published) caption."""
    cat = tone_ws.catalog
    draft, rejected, edited = (clip_named(tone_ws, n) for n in ("mid_01.wav", "high_02.wav", "low_03.wav"))
    review.edit(cat, draft, "bob", "bob's unfinished draft", cat.get_review(draft).version)
    review.reset(cat, draft, "bob", cat.get_review(draft).version)
    review.reject(cat, rejected, "bob", cat.get_review(rejected).version, reason="noise")
    review.edit(cat, edited, "bob", "a low hum, corrected", cat.get_review(edited).version)
    return tone_ws, draft, rejected, edited


def test_the_bridge_value_names_the_clicked_clips_in_order():
    assert picked_ids("12@1733") == [12]
    assert picked_ids("7,3,7,12@99") == [7, 3, 12]          # a caption point repeats its clip: listed once
    assert picked_ids("") == [] and picked_ids(None) == [] and picked_ids("x,@1") == []


def test_a_visitors_map_has_published_captions_and_no_review_status(reviewed, no_index):
    ws, draft, rejected, edited = reviewed
    editor = projection.build_map(ws, "active", ProjectionParams(n_neighbors=8)).points.set_index("clip_id")
    assert editor.loc[draft, "caption"] == "bob's unfinished draft" and editor.loc[rejected, "status"] == "rejected"

    data = projection.build_map(ws, "active", ProjectionParams(n_neighbors=8), public=True)
    p = data.points.set_index("clip_id")
    assert p.loc[draft, "caption"] == "a mid beep"                 # the teacher's, not the draft
    assert p.loc[rejected, "caption"] == "" and p.loc[rejected, "tags"] == ""   # rejected text never shown
    assert p.loc[edited, "caption"] == "a low hum, corrected" and p.loc[edited, "top_tag"] == "hum"
    assert "status" not in p and "status" not in data.fields
    table = projection.points_table(data, "label")
    assert "status" not in table.columns
    shown = json.dumps(projection.figure(data, "label").to_plotly_json(), default=str)
    assert "status" not in shown and "rejected" not in shown and "draft" not in shown
    with pytest.raises(KeyError):
        projection.points_table(data, "status")
    # a selection lists its clips in the order picked
    assert projection.points_table(data, "label", clip_ids=[edited, draft])["clip"].tolist() == [edited, draft]


def test_clicking_plays_and_visitors_cannot_send_back(reviewed, no_index, auth_app_factory):
    from gradio_client import Client

    from ui.state import AppState
    ws, draft, rejected, edited = reviewed
    url = auth_app_factory(AppState(ws.settings), AccessPolicy(parse_users("ann:pw-admin:admin"), visitor_mode=True))
    visitor = Client(url, verbose=False)
    plot, note, color, table = visitor.predict(*DRAW, api_name="/map_draw")
    assert table["headers"][:2] == ["clip", "label"] and "status" not in table["headers"]
    assert "bob's unfinished draft" not in json.dumps(plot) and "a mid beep" in json.dumps(plot)

    # a click on the map: the bridge writes "<id>@<nonce>" and the clip plays with its published caption
    clip_id, audio, info, selection, listed = visitor.predict(f"{draft}@1", "label", api_name="/map_pick")
    assert clip_id == draft and str(audio).endswith(".wav")
    assert "a mid beep" in info and "status" not in info and "draft" not in info and selection == ""
    # a box selection: the first plays, all are listed (here and in the table)
    clip_id, audio, info, selection, listed = visitor.predict(f"{edited},{rejected},{draft}@2", "label",
                                                             api_name="/map_pick")
    assert clip_id == edited and "a low hum, corrected" in info and "3 clips selected" in selection
    assert [r[0] for r in listed["data"]] == [edited, rejected, draft] and "noise" not in selection

    message = app_error(lambda: visitor.predict(draft, "label", "", False, api_name="/map_send_to_review"))
    assert "review" in message.lower()
    app_error(lambda: visitor.predict("label", "", False, api_name="/map_send_outliers"))
    assert ws.catalog.get_review(rejected).status == "rejected" and ws.catalog.get_review(edited).status == "edited"

    # an editor's map keeps the review status
    admin = Client(url, auth=("ann", "pw-admin"), verbose=False)
    _, _, _, table = admin.predict(*DRAW, api_name="/map_draw")
    assert "status" in table["headers"]
    _, _, info, _, _ = admin.predict(f"{rejected}@3", "label", api_name="/map_pick")
    assert "status rejected" in info
