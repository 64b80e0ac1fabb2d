"""Progress that reads (issue 14, item 5): one bar per job, with the counts, the rate and the time left."""
from __future__ import annotations

import inspect

import gradio as gr

from ui.progress import rate_and_eta, reporter, steps


def test_the_text_says_rate_and_time_left_once_something_is_done():
    assert rate_and_eta(0, 100, 3.0) == ""
    assert rate_and_eta(25, 100, 5.0) == " · 5.0 clips/s · about 15 s left"
    assert rate_and_eta(10, 1000, 5.0, unit="files") == " · 2.0 files/s · about 8 min left"
    assert rate_and_eta(100, 100, 5.0).endswith("about 0 s left")


def test_core_callbacks_become_one_bar_with_counts(monkeypatch):
    calls = []
    clock = iter([100.0, 104.0, 108.0, 108.0])
    monkeypatch.setattr("ui.progress.time.monotonic", lambda: next(clock))
    report = reporter(lambda value, desc, unit: calls.append((value, desc, unit)))
    report(20, 80, "captioning")
    steps_report = steps(lambda value, desc, unit: calls.append((value, desc, unit)), "saving")
    steps_report(0, 0)
    assert calls[0] == ((20, 80), "captioning · 5.0 clips/s · about 12 s left", "clips")
    assert calls[1] == ((0, 1), "saving", "clips")          # nothing done yet: no rate; total never 0


def test_every_job_with_progress_draws_one_bar(settings):
    """An event whose handler takes a gr.Progress and has several outputs names the one component its bar
    goes on; otherwise Gradio draws a bar over each output."""
    from app import build_app
    from ui.state import AppState
    demo = build_app(AppState(settings))
    jobs = [f for f in demo.fns.values() if f.fn is not None
            and any(isinstance(p.default, gr.Progress) for p in inspect.signature(f.fn).parameters.values())]
    assert len(jobs) >= 10
    many = [f for f in jobs if len(f.outputs) > 1]
    assert [f.name for f in many if len(f.show_progress_on or []) != 1] == []
