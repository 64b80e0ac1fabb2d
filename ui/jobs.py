"""Cancel flags for the long jobs a browser session starts (an import, a caption batch, an index sync).

A job runs inside `jobs.running(request)`, which hands it a fresh flag to check between steps; the
session's Cancel button sets every flag of that session's running jobs (`jobs.cancel(request)`). A flag
lives only while its job runs, so nothing piles up per session: a page closed mid-job leaves its entry
until the job ends, and a Cancel pressed while nothing runs is a no-op (as a new job starts uncancelled).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


def session_key(request) -> str:
    """The browser session behind a Gradio request; "cli" for a call without one (a test, a script)."""
    return getattr(request, "session_hash", None) or "cli"


class SessionJobs:
    """The running jobs of one kind (one per tab), by browser session."""

    def __init__(self) -> None:
        self._flags: dict[str, list[threading.Event]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def running(self, request) -> Iterator[threading.Event]:
        """A cancel flag for a job of this session, forgotten when the job ends (however it ends)."""
        key, flag = session_key(request), threading.Event()
        with self._lock:
            self._flags.setdefault(key, []).append(flag)
        try:
            yield flag
        finally:
            with self._lock:
                flags = self._flags.get(key, [])
                if flag in flags:
                    flags.remove(flag)
                if not flags:
                    self._flags.pop(key, None)

    def cancel(self, request) -> int:
        """Ask this session's running jobs to stop after their current step; how many there were."""
        with self._lock:
            flags = list(self._flags.get(session_key(request), []))
        for flag in flags:
            flag.set()
        return len(flags)

    def __len__(self) -> int:
        """Sessions with a job running now."""
        with self._lock:
            return len(self._flags)
