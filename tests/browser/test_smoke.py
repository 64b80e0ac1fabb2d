"""The app opens in a real browser on the demo workspace, on a desktop and a phone-width window."""
from __future__ import annotations


def test_the_app_opens_in_chromium(browser, page_at, shot, demo_workspace, app_factory):
    from ui.state import AppState
    url = app_factory(AppState(demo_workspace))
    for phone in (False, True):
        page = page_at(url, phone=phone)
        assert "Hearsay" in page.title()
        assert page.get_by_role("tab").count() >= 3
        assert shot(page, f"smoke-{'phone' if phone else 'desktop'}").stat().st_size > 10_000
