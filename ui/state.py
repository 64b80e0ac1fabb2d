"""What every tab shares: the settings, the open workspace, who may read what (the access policy),
and how far the indexing started on launch has got."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

from core.auth.access import AccessPolicy
from core.store.settings import Settings, load_settings
from core.store.workspace import Workspace


@dataclass
class BackgroundJob:
    """A job the app runs on its own (indexing on launch), as the page may show it. Thread-safe enough:
    one writer, readers only copy the fields."""
    state: str = "idle"                  # idle → running → done | failed
    done: int = 0
    total: int = 0
    message: str = ""
    started: float | None = None
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self) -> None:
        self.state, self.done, self.total, self.message, self.started = "running", 0, 0, "", time.monotonic()
        self.finished.clear()

    def advance(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)

    def finish(self, message: str, failed: bool = False) -> None:
        self.state, self.message = ("failed" if failed else "done"), message
        self.finished.set()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def describe(self) -> str:
        """One line for a status box: 'Indexing 40 of 82 clips…', or how it ended."""
        if self.state == "running":
            return (f"Indexing {self.done} of {self.total} clips…" if self.total
                    else "Preparing the search index…")
        return self.message


@dataclass
class AppState:
    settings: Settings = field(default_factory=load_settings)
    policy: AccessPolicy = field(default_factory=AccessPolicy)      # app.build_app sets the real one
    launch_index: BackgroundJob = field(default_factory=BackgroundJob)   # app.seed_in_background fills it

    @cached_property
    def ws(self) -> Workspace:
        return Workspace(self.settings.workspace, self.settings)

    def role(self, request) -> str:
        """The role behind a Gradio request (what a tab may show it; the guard checks what it may do)."""
        return self.policy.role_of(request)
