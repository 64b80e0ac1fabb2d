"""Visitor mode in a real browser (issue 14, item 2): what a stranger on the public demo sees first.

The page opens on Search; only Search, Library, Map and Evaluate are offered (no blank editor tabs);
the banner at the top says this is a read-only demo and offers "Sign in" (users are configured here);
the Library has no import form and no delete button. Desktop and phone screenshots: visitor-*.png."""
from __future__ import annotations

import re

VISITOR_TABS = ["Search", "Library", "Map", "Evaluate"]


def visible_tabs(page) -> list[str]:
    tabs = page.get_by_role("tab")
    return [tabs.nth(i).inner_text().strip() for i in range(tabs.count()) if tabs.nth(i).is_visible()]


def test_a_visitor_meets_a_read_only_demo_that_opens_on_search(browser, page_at, shot, demo_workspace,
                                                                auth_app_factory):
    from core.auth.access import AccessPolicy, parse_users
    from ui.state import AppState
    policy = AccessPolicy(parse_users("ann:pw-admin:admin"), visitor_mode=True)
    url = auth_app_factory(AppState(demo_workspace), policy)

    page = page_at(url)
    banner = page.locator("#access-bar")
    banner.get_by_text("read-only").wait_for()
    assert "visitor" in banner.inner_text() and banner.get_by_role("link", name="Sign in").is_visible()
    tab_list = page.get_by_role("tablist").first
    assert banner.bounding_box()["y"] < tab_list.bounding_box()["y"]          # at the top, above the tabs
    page.wait_for_function("document.querySelectorAll('[role=tab]').length <= 4")
    assert visible_tabs(page) == VISITOR_TABS
    assert page.get_by_role("tab", name="Search").get_attribute("aria-selected") == "true"
    shot(page, "visitor-desktop-search", full_page=False)

    page.get_by_role("tab", name="Library").click()
    page.get_by_text("page 1 of", exact=False).first.wait_for()
    assert not page.get_by_role("button", name="Import", exact=True).is_visible()
    assert not page.get_by_role("button", name=re.compile("Delete")).is_visible()
    assert page.get_by_text("Upload files or zips").count() == 0 or not page.get_by_text("Upload files or zips").is_visible()
    shot(page, "visitor-desktop-library", full_page=False)

    phone = page_at(url, phone=True)
    phone.locator("#access-bar").get_by_text("read-only").wait_for()
    phone.wait_for_function("document.querySelectorAll('[role=tab]').length <= 4")
    assert phone.get_by_role("tab", name="Search").get_attribute("aria-selected") == "true"
    shot(phone, "visitor-phone", full_page=False)
