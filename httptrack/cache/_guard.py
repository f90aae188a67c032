"""The loop guard: a request the cache has answered again and again goes to the provider.

An agent loop that re-sends an identical conversation until the answer changes (a tool
runner retrying, a "try again" loop) gets the identical answer from the cache every time,
and never ends: one such loop answered a key 19,135 times in six minutes. So each process
counts the hits per cache key over the last minute; past ``cache_max_hits``
(``HTTPTRACK_CACHE_MAX_HITS``, 60 by default, ``0``: no limit) the request is sent to the
provider as if the cache were not there, its row says so in ``parse_notes``, and
``fault_counts()["cache_loop"]`` counts it. The answer it brings replaces the stored one.
Replay mode never sends anything, so it has no guard.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["WINDOW", "HitGuard", "guard"]

#: The window the hits are counted over, in seconds.
WINDOW = 60.0
#: Keys remembered before the ones with no recent hit are forgotten.
_MAX_KEYS = 4096


class HitGuard:
    """Recent hits per cache key, in one process (every transport and folder shares it)."""

    __slots__ = ("_hits", "_lock")

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, limit: int, now: float) -> bool:
        """Whether the cache may answer ``key`` once more at ``now`` (the hit is counted), or
        ``False``: it answered ``limit`` times within the last :data:`WINDOW` seconds."""
        if limit <= 0:
            return True
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= _MAX_KEYS:
                    self._forget(now)
                hits = self._hits[key] = deque()
            while hits and now - hits[0] >= WINDOW:
                hits.popleft()
            if len(hits) >= limit:
                return False
            hits.append(now)
            return True

    def _forget(self, now: float) -> None:
        stale = [key for key, hits in self._hits.items() if not hits or now - hits[-1] >= WINDOW]
        for key in stale:
            del self._hits[key]
        if len(self._hits) >= _MAX_KEYS:  # that many keys busy at once: start counting anew
            self._hits.clear()

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


guard = HitGuard()
