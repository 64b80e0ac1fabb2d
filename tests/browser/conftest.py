"""Browser tests: the real app in headless Chromium, driven by Playwright.

Chromium comes from the system package manager (Debian: `apt-get install chromium`) and is launched by
path, because Playwright's own browser download is not reachable here. Set HEARSAY_CHROMIUM to use
another binary. Without Chromium or the `playwright` package these tests skip, and say why.
Screenshots go to tests/browser/screenshots/ (git-ignored): look at them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    named = os.environ.get("HEARSAY_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next((found for found in map(shutil.which, CANDIDATES) if found), None)


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set HEARSAY_CHROMIUM): browser tests skipped")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page_at(browser):
    """`page = page_at(url, phone=False)`: a fresh browser context (own cookies) on the page, loaded."""
    contexts = []

    def open_page(url: str, phone: bool = False):
        context = browser.new_context(viewport=PHONE if phone else DESKTOP, is_mobile=phone, has_touch=phone)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(url, wait_until="load")
        # Gradio renders after its /config and the first websocket/SSE messages: wait for the tabs
        page.get_by_role("tab").first.wait_for(state="visible")
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def shot():
    """`shot(page, "name")` saves tests/browser/screenshots/name.png (full page) and returns its path."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def take(page, name: str, full_page: bool = True) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory):
    """One workspace holding the bundled demo (assets/demo), seeded and indexed with the shipped student
    once per session. Tests that write to it must leave it as they found it, or copy it first."""
    from core.pipeline import index
    from core.pipeline.importer import seed_demo
    from core.store.settings import load_settings
    from core.store.workspace import Workspace

    settings = load_settings(workspace=tmp_path_factory.mktemp("browser") / "ws", seed_demo=False)
    ws = Workspace(settings.workspace, settings)
    report = seed_demo(ws)
    assert report is not None and report.count("imported") >= 80, report and report.summary()
    index.sync(ws, index.resolve_embedder(ws, "active"))
    return settings
