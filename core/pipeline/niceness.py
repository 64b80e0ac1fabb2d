"""Background work at a lower CPU priority than the requests people wait on.

The app runs everything in one process: searches, page loads, and long jobs (a caption job, an index
catch-up). On a small machine (2 cores) a long job taking its full share of the CPU made searches
several times slower. Linux lets one thread be niced on its own, so a long job's heavy steps run on
a thread niced for them, and the cores go to searches first. A niced thread cannot be un-niced
without privileges, so the work runs on a fresh thread, never on a pooled server thread.
Elsewhere (no per-thread priorities) the work simply runs.
"""
from __future__ import annotations

import contextvars
import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
STEP = 10                   # nice steps below the server's own priority


def lower_this_thread(step: int = STEP) -> bool:
    """Nice the calling thread (only it, on Linux); False where that is not possible."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
        return True
    except (AttributeError, OSError):
        return False


def run_niced(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) on a fresh thread at a lower priority; its result, or its exception, here."""
    out: dict = {}
    context = contextvars.copy_context()

    def work():
        lower_this_thread()
        try:
            out["value"] = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            out["error"] = exc
    worker = threading.Thread(target=work, name="niced-work", daemon=True)
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
