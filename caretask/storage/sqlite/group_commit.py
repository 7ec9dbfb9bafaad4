"""Group commit for SQLite: the writes that arrive together share one durable COMMIT.

With `synchronous=FULL` each COMMIT waits for the disk (an fsync of the WAL), and SQLite
has one writer at a time, so one transaction per request capped creates at the disk's
fsync rate. Here one thread owns the write connection; whatever writes are queued when
it is free run in one transaction, each inside its own SAVEPOINT, so a write that fails
(a stale version, a constraint) rolls back alone while the others commit. No caller hears
of success before the COMMIT that holds its write has returned: a 2xx still means on disk.

A write may be submitted as not needing durability (the audit trail's batches): a group
made only of such writes commits with `synchronous=NORMAL`, without waiting for the disk.
In WAL mode that commit is still atomic, and the next FULL commit makes it durable too.
A commit with an fsync costs the server CPU as well as time, and the audit trail commits
a few times a second even on a server that only reads.

A group that fails as a whole (a full disk, an I/O error: SQLite may then have rolled the
whole transaction back itself) fails each of its writes with that error and is reported
to `after_failure`; the thread goes on with the next group whatever happened to this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from caretask.metrics import GROUP_COMMIT

T = TypeVar("T")
MAX_GROUP = 256  # writes per transaction: bounds the time a group holds SQLite's lock

_STOP = object()


class GroupCommitWriter:
    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        after_commit: Callable[[], None] | None = None,
        after_failure: Callable[[], None] | None = None,
    ) -> None:
        self._connect = connect
        self._after_commit = after_commit
        self._after_failure = after_failure
        self.failed_at: float | None = None  # monotonic; the last group that failed, if none
        # has committed since
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def submit(self, work: Callable[[sqlite3.Connection], T], durable: bool = True) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((work, loop, future, durable))
        return await future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def queued(self) -> int:
        return self._queue.qsize()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
            GROUP_COMMIT.observe(len(group))
            try:
                if conn is None:  # here, not at start: a failure is the group's, not fatal
                    conn = self._connect()
                committed = self._commit(conn, group)
            except Exception as error:  # no connection, or it could not be rolled back
                _fail(group, error)  # answers only the writes not answered yet
                committed = False
            if committed:
                self.failed_at = None
                if self._after_commit:
                    self._after_commit()
            else:
                self.failed_at = time.monotonic()
                if self._after_failure:
                    self._after_failure()
            if stop:
                return

    @staticmethod
    def _commit(conn: sqlite3.Connection, group: list[Any]) -> bool:
        """Run and commit a group; whether it committed. Raises (the group unanswered) only
        if the connection cannot be rolled back or reset."""
        outcomes: list[tuple[bool, Any]] = []
        committed = False
        lazy = not any(durable for _, _, _, durable in group)
        try:
            if lazy:
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for work, _, _, _ in group:
                conn.execute("SAVEPOINT write")
                try:
                    outcomes.append((True, work(conn)))
                except BaseException as error:  # this write alone is undone
                    if not conn.in_transaction:  # SQLite undid the whole group (SQLITE_FULL)
                        raise
                    conn.execute("ROLLBACK TO write")
                    outcomes.append((False, error))
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
            committed = True
        except BaseException as error:  # nothing of the group was committed
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(False, error)] * len(group)
        finally:
            if lazy:
                conn.execute("PRAGMA synchronous=FULL")
        _answer(group, outcomes)
        return committed


def _fail(group: list[Any], error: BaseException) -> None:
    _answer(group, [(False, error)] * len(group))


def _answer(group: list[Any], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand each write's outcome to the event loop that waits for it."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for (_, loop, future, _), (ok, value) in zip(group, outcomes, strict=True):
        by_loop.setdefault(loop, []).append((future, ok, value))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():  # the request was cancelled (client gone); the write stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
