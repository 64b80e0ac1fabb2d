"""`@load_once`: the process's one instance of a heavy model (tagger, transcriber), loaded on first use."""
from __future__ import annotations

import functools
import threading
from typing import Callable, TypeVar

T = TypeVar("T")


def load_once(factory: Callable[[], T]) -> Callable[[], T]:
    """`factory()` at most once per process, even when two threads ask first (functools.cache alone
    would let both load it)."""
    lock = threading.Lock()
    cached = functools.cache(factory)

    @functools.wraps(factory)
    def get() -> T:
        with lock:
            return cached()
    return get
