"""One progress bar per job, whose text reads: what it is doing, the rate and the time left.

Gradio draws a job's progress over every output of its event unless told otherwise (`show_progress_on`):
five outputs meant five overlapping bars. Each long event names the one component its bar goes on
(`one_bar(status)`), and turns core's `(done, total, message)` callbacks into that bar (`reporter`);
Gradio itself adds the "done/total unit" counts.
"""
from __future__ import annotations

import time


def rate_and_eta(done: int, total: int, seconds: float, unit: str = "clips") -> str:
    """' · 12.5 clips/s · about 7 s left' once something was done, else ''."""
    if done <= 0 or seconds <= 0:
        return ""
    rate = done / seconds
    left = max(total - done, 0) / rate
    return f" · {rate:.1f} {unit}/s · about {_duration(left)} left"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def reporter(progress, unit: str = "clips"):
    """core's (done, total, message) callbacks as one Gradio progress bar with the rate and time left."""
    started = time.monotonic()

    def report(done: int, total: int, message: str) -> None:
        text = f"{message}{rate_and_eta(done, total, time.monotonic() - started, unit)}"
        progress((done, max(total, 1)), desc=text, unit=unit)
    return report


def steps(progress, message: str, unit: str = "clips"):
    """The same bar for core callbacks that report only (done, total), with a fixed message."""
    report = reporter(progress, unit)
    return lambda done, total: report(done, total, message)


def one_bar(component) -> dict:
    """Event options that draw the job's progress once, on `component`, instead of on every output."""
    return dict(show_progress="full", show_progress_on=[component])
