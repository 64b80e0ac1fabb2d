"""The Map tab in a real browser: clicking a dot plays its clip and shows its caption (the JS bridge in ui/map.py)."""
from __future__ import annotations

import re
import shutil

import pytest

from core.store.catalog import ClipQuery

# Where a captioned clip's dot is on screen, from the drawn Plotly figure (axis l2p + plot offset + div position),
# and what it should show: its clip id and its caption (customdata, see core/pipeline/map_plots._hover).
FIRST_POINT = """(plot) => {
  // the first captioned point that no other point covers (a click lands on whichever dot is drawn on top)
  const xa = plot._fullLayout.xaxis, ya = plot._fullLayout.yaxis, box = plot.getBoundingClientRect();
  const dots = plot._fullData.filter((t) => t.customdata && t.mode === 'markers' && !t.name.includes('caption'));
  const all = dots.flatMap((t) => t.customdata.map((c, i) => ({c, x: box.left + xa._offset + xa.l2p(t.x[i]),
                                                                y: box.top + ya._offset + ya.l2p(t.y[i])})));
  const alone = (d) => all.every((o) => o === d || Math.hypot(o.x - d.x, o.y - d.y) > 12);
  const d = all.find((d) => !String(d.c[1]).includes('no caption') && alone(d));
  return {x: d.x, y: d.y, clip: String(d.c[0]), caption: String(d.c[1])};
}"""


@pytest.fixture(scope="module")
def captioned_demo(demo_workspace, tmp_path_factory):
    """A copy of the demo workspace whose clips carry a teacher caption ("the sound of a cat"), so a click
    has a caption to show (the shared demo workspace stays as it is)."""
    from core.store.settings import load_settings
    from core.store.workspace import Workspace

    copy = tmp_path_factory.mktemp("map") / "ws"
    shutil.copytree(demo_workspace.workspace, copy)
    settings = load_settings(workspace=copy, seed_demo=False)
    cat = Workspace(copy, settings).catalog
    for row in cat.clip_rows(ClipQuery(limit=1000))[0]:
        label = row.recording.meta.get("label") or "sound"
        cat.add_caption(row.clip.id, f"the sound of a {label}", "teacher", teacher="embedded", tags={label: 0.9})
    return settings


def open_map(page):
    page.get_by_role("tab", name="Map").click()
    plot = page.locator("#map-plot .js-plotly-plot")
    plot.locator(".scatterlayer .point").first.wait_for(state="visible", timeout=90_000)   # drawn on first visit
    plot.scroll_into_view_if_needed()
    page.wait_for_timeout(300)          # the bridge binds on the next DOM mutation
    return plot


def click_first_point(page, plot) -> dict:
    point = plot.evaluate(FIRST_POINT)
    page.mouse.click(point["x"], point["y"])
    return point


def caption_start(hover_caption: str) -> str:
    """The first words of a caption as the hover text wraps it (<br>), to find it in the clip's details."""
    words = re.sub(r"<[^>]+>", " ", hover_caption).split()
    return " ".join(words[:4])


def assert_clip_plays(page, point: dict) -> None:
    info = page.locator("#map-clip-info")
    expected = caption_start(point["caption"])
    info.get_by_text(expected, exact=False).first.wait_for(timeout=15_000)
    # the player got the clip: its file link serves audio, and it shows the clip's length
    link = page.locator("#map-player [data-testid=download-link]")
    link.wait_for(state="attached", timeout=15_000)
    served = page.request.get(link.get_attribute("href"))
    assert served.ok and len(served.body()) > 1000
    page.wait_for_function("() => /0:0[1-9]|[1-9]:[0-9][0-9]/.test(document.querySelector('#map-player').innerText)",
                           timeout=15_000)
    assert "no caption" not in page.locator("#map-clip-info").inner_text()
    assert page.locator("#map-clip-id input").input_value() == point["clip"]      # the clicked clip plays


def box_select_all(page, plot) -> None:
    """Plotly's own box-select tool (the plot's toolbar), dragged over the whole plotting area."""
    plot.hover()
    plot.locator('[data-attr="dragmode"][data-val="select"]').click()
    area = plot.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(area["x"] + 2, area["y"] + 2)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2, steps=5)
    page.mouse.move(area["x"] + area["width"] - 2, area["y"] + area["height"] - 2, steps=5)
    page.mouse.up()


def test_clicking_a_dot_plays_the_clip_for_an_editor(page_at, shot, captioned_demo, app_factory):
    from ui.state import AppState

    page = page_at(app_factory(AppState(captioned_demo)))
    plot = open_map(page)
    point = click_first_point(page, plot)
    assert_clip_plays(page, point)
    assert "status" in page.locator("#map-clip-info").inner_text()          # editors read the review status
    assert page.get_by_role("button", name="Send this clip to review").is_visible()
    shot(page, "map-click-desktop")

    # a box selection lists the clips it caught (and plays the first)
    box_select_all(page, plot)
    page.get_by_text(re.compile(r"\d+ clips selected")).wait_for(timeout=15_000)
    shot(page, "map-box-select-desktop")


def test_a_visitor_on_a_phone_clicks_to_listen(page_at, shot, captioned_demo, auth_app_factory):
    from core.auth.access import AccessPolicy, parse_users
    from ui.state import AppState

    url = auth_app_factory(AppState(captioned_demo), AccessPolicy(parse_users("ann:pw:admin"), visitor_mode=True))
    page = page_at(url, phone=True)
    plot = open_map(page)
    point = click_first_point(page, plot)
    assert_clip_plays(page, point)
    assert "status" not in page.locator("#map-clip-info").inner_text()      # no review status for visitors
    assert not page.get_by_role("button", name="Send this clip to review").is_visible()
    shot(page, "map-click-phone")
