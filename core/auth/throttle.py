"""How often: backoff for failed sign-ins, and an upload allowance for anonymous visitors.

Both keep a little state per key (a user name, a client address) in memory, forget keys that have
been quiet for a while and never hold more than `max_keys` of them, so someone cycling through
random names or addresses cannot grow the server's memory. Times come from `clock` (injectable for tests).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginThrottle:
    """Exponential backoff per user name and per client address.

    Each attempt counts as a failure from the moment it starts (so a burst of parallel guesses
    cannot all slip past the check) until `succeeded` clears it. After `free` of them a key waits
    base·2^(failures−free) seconds after its last attempt, at most `cap`. A name is keyed as typed,
    whether or not such a user exists, so the answers never tell which names are real."""

    def __init__(self, free: int = 5, base: float = 1.0, cap: float = 900.0, forget: float = 3600.0,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.free, self.base, self.cap, self.forget, self.max_keys = free, base, cap, forget, max_keys
        self.clock = clock
        self._keys: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def begin(self, user: str, address: str | None) -> float:
        """0 when this attempt may go ahead (it is counted now), else the seconds to wait (nothing counted)."""
        with self._lock:
            now = self.clock()
            self._prune(now)
            keys = _keys(user, address)
            wait = max(self._wait(self._keys.get(k), now) for k in keys)
            if wait > 0:
                return wait
            for key in keys:
                entry = self._keys.pop(key, None) or _Failures()
                entry.count, entry.last = entry.count + 1, now
                self._keys[key] = entry                     # most recent last: the oldest go first
            self._prune(now)
            return 0.0

    def succeeded(self, user: str, address: str | None) -> None:
        """The password was right: the name starts afresh, and the address gets this attempt back."""
        with self._lock:
            name_key, *address_keys = _keys(user, address)
            self._keys.pop(name_key, None)
            for key in address_keys:
                if key in self._keys:
                    self._keys[key].count = max(0, self._keys[key].count - 1)

    def failures(self, key: str) -> int:
        """Counted attempts of a user name or an address (0 once forgotten)."""
        with self._lock:
            self._prune(self.clock())
            entry = self._keys.get(f"user:{key}") or self._keys.get(f"address:{key}")
            return entry.count if entry else 0

    def retry_after(self, user: str, address: str | None) -> float:
        with self._lock:
            now = self.clock()
            return max(self._wait(self._keys.get(k), now) for k in _keys(user, address))

    def size(self) -> int:
        return len(self._keys)

    def reset(self) -> None:
        with self._lock:
            self._keys.clear()

    def _wait(self, entry: _Failures | None, now: float) -> float:
        if entry is None or entry.count < self.free:
            return 0.0
        delay = min(self.cap, self.base * 2 ** (entry.count - self.free))
        return max(0.0, entry.last + delay - now)

    def _prune(self, now: float) -> None:
        while self._keys:
            key, entry = next(iter(self._keys.items()))
            if now - entry.last <= self.forget and len(self._keys) <= self.max_keys:
                break
            del self._keys[key]


def _keys(user: str, address: str | None) -> list[str]:
    name = " ".join(str(user or "").split())[:64]
    return [f"user:{name}"] + ([f"address:{address}"] if address else [])


class UploadQuota:
    """At most `per_window` bytes per key (a client address) in any `window` seconds."""

    def __init__(self, per_window: int, window: float = 3600.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.per_window, self.window, self.max_keys, self.clock = per_window, window, max_keys, clock
        self._taken: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, nbytes: int) -> bool:
        """Count `nbytes` against `key` and say yes, or say no and count nothing."""
        with self._lock:
            now = self.clock()
            taken = self._taken.pop(key, None) or deque()
            while taken and now - taken[0][0] > self.window:
                taken.popleft()
            allowed = sum(n for _, n in taken) + nbytes <= self.per_window
            if allowed:
                taken.append((now, nbytes))
            if taken:
                self._taken[key] = taken
            while len(self._taken) > self.max_keys:
                self._taken.popitem(last=False)
            return allowed
