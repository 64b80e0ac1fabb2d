"""The Train tab in a real browser (issue 14, item 4): after a run finishes, "Compare" puts its model
next to the active one on the run's held-out recordings, warns when there are too few of them to mean
anything, and offers "Make this model active" beside that evidence. Screenshot: train-compare.png."""
from __future__ import annotations

import re
import shutil

import pytest

from core.store.catalog import ClipQuery


@pytest.fixture(scope="module")
def finished_run(demo_workspace, tmp_path_factory):
    """A copy of the demo workspace with captions ("the sound of a cat") and one finished 1-epoch CPU run
    that started from the shipped student (the shared demo workspace stays as it is)."""
    from core.store.settings import load_settings
    from core.store.workspace import Workspace
    from training.train import TrainConfig, run_training

    copy = tmp_path_factory.mktemp("train") / "ws"
    shutil.copytree(demo_workspace.workspace, copy)
    settings = load_settings(workspace=copy, seed_demo=False)
    ws = Workspace(copy, settings)
    for row in ws.catalog.clip_rows(ClipQuery(limit=1000))[0]:
        label = row.recording.meta.get("label") or "sound"
        ws.catalog.add_caption(row.clip.id, f"the sound of a {label}", "teacher", teacher="embedded")
    result = run_training(ws, TrainConfig.from_dict({"epochs": 1, "batch_size": 32, "val_fraction": 0.1,
                                                     "unreviewed_weight": 1.0, "device": "cpu"}))
    assert result.status == "finished" and result.model_id
    return settings, result


def test_compare_a_finished_run_with_the_active_model(page_at, shot, finished_run, app_factory):
    from playwright.sync_api import expect

    from ui.state import AppState
    settings, result = finished_run
    page = page_at(app_factory(AppState(settings)))           # no users: the one person here is admin
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Run", exact=True).click()
    page.get_by_role("option", name=str(result.run_id), exact=True).click()
    page.locator("#train-compare-folder").wait_for(state="visible")      # admins may name a server folder
    page.locator("#train-compare").click()

    table = page.locator("#train-compare-table")
    expect(table).to_contain_text(re.compile(r"held-out \(\d+ pairs\)"), timeout=45_000)
    text = table.inner_text()
    for word in ("active", "new", "Δ", "text→audio R@1", "text→audio R@5"):
        assert word in text, word
    note = page.locator("#train-compare-note")
    assert result.model_id in note.inner_text()
    expect(note).to_contain_text(re.compile(r"Only \d+ held-out pairs: these numbers are noise"))
    make_active = page.get_by_role("button", name="Make this model active")
    assert make_active.is_visible()
    # the button sits with the evidence: right under the comparison table
    assert 0 <= make_active.bounding_box()["y"] - table.bounding_box()["y"] - table.bounding_box()["height"] < 120
    note.scroll_into_view_if_needed()
    shot(page, "train-compare")
