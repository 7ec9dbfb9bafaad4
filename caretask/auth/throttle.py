"""Slowing down secret guessing at the token endpoint: failed attempts are counted per key
(a client id, a peer address) over a sliding window; past the limit, the key must wait
until its oldest failure in the window ages out. Pure logic on a clock the caller passes,
in memory: each server process keeps its own counts.
"""

from __future__ import annotations

from collections import deque


class FailureThrottle:
    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self._limit = limit
        self._window = window
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until `key` may try again, or None if it may now."""
        failures = self._recent(key, now)
        if failures is None or len(failures) < self._limit:
            return None
        return failures[-self._limit] + self._window - now

    def record(self, key: str, now: float) -> None:
        failures = self._recent(key, now)
        if failures is None:
            if len(self._failures) >= self._max_keys:  # bounded: the oldest key goes first
                del self._failures[next(iter(self._failures))]
            failures = self._failures[key] = deque(maxlen=self._limit)
        failures.append(now)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)
