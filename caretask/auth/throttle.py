"""Bounding secret checks at the token endpoint: how many an address may start, how many
failures one client id may take from one address, and how many run at once.

Budgets are token buckets (a key may spend `limit` at once, and earns them back at `limit`
per `window` seconds), on a clock the caller passes, in memory: each server process keeps its
own. A full bucket is the same as no entry, so only keys that spent something are kept, and
at most `max_keys` of them: past that the least recently used key is forgotten (it gets a
full budget again, which an attacker could get as cheaply from a fresh address anyway).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Budget:
    def __init__(self, limit: int, window: float, max_keys: int = 20_000) -> None:
        self._limit = float(limit)
        self._rate = limit / window  # budget earned back per second
        self._max_keys = max_keys
        self._spent: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (left, at)

    def _left(self, key: str, now: float) -> float:
        entry = self._spent.get(key)
        if entry is None:
            return self._limit
        left, at = entry
        return min(self._limit, left + (now - at) * self._rate)

    def _store(self, key: str, left: float, now: float) -> None:
        if left >= self._limit:
            self._spent.pop(key, None)
        else:
            self._spent[key] = (left, now)
            self._spent.move_to_end(key)
        while len(self._spent) > self._max_keys:
            self._spent.popitem(last=False)
        # the least recently used keys come first: drop those that have earned it all back
        while self._spent:
            oldest = next(iter(self._spent))
            if self._left(oldest, now) < self._limit:
                break
            del self._spent[oldest]

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until `key` may spend one again, or None if it may now."""
        left = self._left(key, now)
        return None if left >= 1 else (1 - left) / self._rate

    def spend(self, key: str, now: float) -> float | None:
        """Spend one if `key` may (None), else the seconds until it may, spending nothing."""
        wait = self.retry_after(key, now)
        if wait is None:
            self._store(key, self._left(key, now) - 1, now)
        return wait

    def record(self, key: str, now: float) -> None:
        """Spend one whether or not any is left (never below zero)."""
        self._store(key, max(0.0, self._left(key, now) - 1), now)

    def refund(self, key: str, now: float) -> None:
        self._store(key, self._left(key, now) + 1, now)

    def clear(self, key: str) -> None:
        self._spent.pop(key, None)

    def __len__(self) -> int:
        return len(self._spent)


class Busy(Exception):
    """Every hashing thread is busy and the queue is full: refused without waiting."""


class BoundedPool:
    """Runs slow functions (scrypt) on `threads` threads of its own, so that they never take
    the event loop's default executor, with at most `queue` more calls waiting; calls beyond
    that raise Busy at once instead of growing an unbounded backlog."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, "caretask-hash")
        self._room = threads + queue
        self._admitted = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._admitted >= self._room:
            raise Busy
        loop = asyncio.get_running_loop()
        self._admitted += 1
        # released when the thread is done, not when the caller stops waiting (a cancelled
        # request's hash still occupies its thread)
        future = self._executor.submit(fn, *args)
        future.add_done_callback(lambda _: self._release_from(loop))
        return await asyncio.wrap_future(future)

    def _release_from(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed first: nothing to release
            loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
