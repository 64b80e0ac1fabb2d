"""Long jobs yield the CPU to searches (core/pipeline/niceness.py): their heavy steps run on a niced thread."""
from __future__ import annotations

import contextvars
import os
import sys
import threading

import pytest

from core.pipeline import niceness
from core.pipeline.captioning import caption_clips
from tests.test_captioning import CountingTeacher

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")


def priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux
def test_run_niced_runs_lower_on_its_own_thread_and_leaves_the_caller_as_it_was():
    before = priority()
    seen = niceness.run_niced(lambda: (threading.get_native_id(), priority()))
    assert seen[0] != threading.get_native_id() and seen[1] == min(19, before + niceness.STEP)
    assert priority() == before                        # a pooled server thread is never niced


def test_run_niced_returns_raises_and_keeps_the_callers_context():
    var = contextvars.ContextVar("request", default=None)
    var.set("this request")
    assert niceness.run_niced(lambda a, b=0: (var.get(), a + b), 2, b=3) == ("this request", 5)
    with pytest.raises(ValueError, match="bad clip"):
        niceness.run_niced(lambda: (_ for _ in ()).throw(ValueError("bad clip")))


@linux
def test_a_caption_job_runs_its_teacher_niced(demo_ws):
    seen = []
    teacher = CountingTeacher(on_batch=lambda n: seen.append(priority()))
    before = priority()
    report = caption_clips(demo_ws, demo_ws.catalog.clip_ids()[:5], teacher)
    assert report.captioned == 5 and seen and all(p == min(19, before + niceness.STEP) for p in seen)
    assert priority() == before
