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
    search_for(phone, "glass breaking")
    card = phone.locator(".hs-card").first
    assert "glass" in card.locator(".hs-title").inner_text().lower()
    box = card.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1          # no sideways scrolling
    shot(phone, "search-phone-results", full_page=False)
    shot(phone, "search-phone-full")
