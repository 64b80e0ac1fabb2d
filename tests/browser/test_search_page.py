"""The Search page as a first-time visitor meets it: type a query, hear a result, click an example,
and the same on a phone-width window."""
from __future__ import annotations

import re


def open_search(page_at, url: str, phone: bool = False):
    page = page_at(url, phone=phone)
    tab = page.get_by_role("tab", name="Search")
    if tab.count() and tab.first.is_visible():            # Search is the first tab; on a phone it may sit
        tab.first.click()                                  # behind the overflow, but it is the selected one
    page.locator("#search-query textarea, #search-query input").first.wait_for(state="visible")
    return page


def search_for(page, words: str):
    box = page.locator("#search-query textarea, #search-query input").first
    box.fill(words)
    page.locator("#search-go").click()
    page.locator("#search-summary").get_by_text(words).wait_for(timeout=60_000)


def test_search_page_on_the_demo(browser, page_at, shot, demo_workspace, app_factory):
    from ui.state import AppState
    url = app_factory(AppState(demo_workspace))

    page = open_search(page_at, url)
    # the index was built by the fixture: the status line says search covers every clip
    page.locator("#search-status").get_by_text("Search covers all").wait_for(timeout=15_000)
    shot(page, "search-desktop-empty", full_page=False)
    search_for(page, "a dog barking")
    cards = page.locator(".hs-card")
    assert cards.count() >= 1
    first = cards.first
    assert first.locator("audio").count() == 1
    assert "dog" in first.locator(".hs-title").inner_text().lower()
    assert first.locator(".hs-weak-badge").count() == 0                  # the dog clip is a close match
    assert page.locator(".hs-weak-badge").count() >= 1                   # the tail is marked weak
    assert first.is_visible() and first.bounding_box()["y"] < 900        # above the fold
    shot(page, "search-desktop-results", full_page=False)

    chip = page.locator("#search-examples button").first
    words = chip.inner_text().strip()
    assert words
    chip.click()
    page.locator("#search-summary").get_by_text(re.compile(re.escape(words))).wait_for(timeout=60_000)
    box = page.locator("#search-query textarea, #search-query input").first
    assert box.input_value() == words
    assert page.locator(".hs-card audio").count() >= 1

    phone = open_search(page_at, url, phone=True)
    query_box = phone.locator("#search-query textarea, #search-query input").first
    # the empty box's hint fits on one line (a wrapped placeholder is cut off at phone width)
    fits = """e => { const style = getComputedStyle(e), ctx = document.createElement("canvas").getContext("2d");
        ctx.font = style.font;
        const room = e.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        return ctx.measureText(e.placeholder).width <= room; }"""
    assert query_box.evaluate(fits)
    search_for(phone, "glass breaking")
    card = phone.locator(".hs-card").first
    assert "glass" in card.locator(".hs-title").inner_text().lower()
    box = card.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1          # no sideways scrolling
    shot(phone, "search-phone-results", full_page=False)
    shot(phone, "search-phone-full")


def test_visitors_see_no_review_status_and_no_index_buttons(browser, page_at, shot, demo_workspace,
                                                            auth_app_factory):
    from core.auth.access import AccessPolicy, parse_users
    from ui.state import AppState
    url = auth_app_factory(AppState(demo_workspace),
                           AccessPolicy(parse_users("ann:pw-admin:admin"), visitor_mode=True))
    page = open_search(page_at, url)
    search_for(page, "glass breaking")
    assert page.locator(".hs-card audio").count() >= 1
    details = page.locator(".hs-details").first.inner_text()
    assert "glass" in details.lower() and "pending" not in details
    page.get_by_text("Advanced: model, index").click()
    page.get_by_text("Filters", exact=True).click()
    page.get_by_label("Source").wait_for(state="visible")
    assert not page.get_by_text("Review status").is_visible()
    for name in ("Update index", "Rebuild", "Cancel"):
        assert not page.get_by_role("button", name=name, exact=True).is_visible(), name
    assert page.get_by_role("button", name="Check index").is_visible()
    shot(page, "search-visitor-advanced")


def test_the_status_line_follows_the_indexing_started_on_launch(browser, page_at, shot, demo_workspace,
                                                                app_factory):
    """The app indexes the active model when it starts (app.index_active_model fills state.launch_index);
    the page says how far it has got, and updates by itself, instead of the first query waiting silently."""
    from ui.state import AppState
    state = AppState(demo_workspace)
    url = app_factory(state)
    job = state.launch_index
    job.start()
    job.advance(20, 82)
    page = open_search(page_at, url)
    status = page.locator("#search-status")
    status.get_by_text(re.compile(r"Indexing the library for search: 20 of 82 clips")).wait_for(timeout=15_000)
    job.advance(60, 82)
    status.get_by_text(re.compile(r"60 of 82 clips · [\d.]+ clips/s · about \d+ s left")).wait_for(timeout=15_000)
    shot(page, "search-status-indexing", full_page=False)
    job.finish("indexed")                                  # the demo workspace's index is complete
    status.get_by_text("Search covers all").wait_for(timeout=15_000)
