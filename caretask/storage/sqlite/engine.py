"""The embedded engine: one SQLite file in WAL mode, shared safely by several processes.

Writes go through one thread per process with `BEGIN IMMEDIATE` (SQLite allows one writer
at a time anyway, and the busy timeout queues writers of other processes), which commits
the writes that arrive together as one group (storage.sqlite.group_commit); reads use a small
pool of threads, each with its own connection, so they never wait on writes.
`synchronous=FULL`: a commit is on disk before the 2xx leaves, even if the machine dies.
A full disk, an I/O error, a read-only file or a lock held too long by another process
is StorageUnavailable (a 503 with Retry-After), and the next write tries again.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from caretask.domain.audit import AuditRecord, encode_batch
from caretask.domain.dates import now_instant
from caretask.domain.indexing import TaskIndex
from caretask.domain.search_params import SearchQuery
from caretask.storage import audit_sql, people_sql, sql_search
from caretask.storage.base import (
    BuildFirst,
    BuildVersion,
    Change,
    ClientRecord,
    Current,
    DeliveryOutcome,
    FeedPosition,
    Find,
    Grant,
    Insert,
    NewVersion,
    PoolStats,
    Redeemed,
    SearchResult,
    SearchTimedOut,
    Serialize,
    StaleVersion,
    StorageUnavailable,
    StoredSubscription,
    StoredTask,
    SubscriptionDraft,
    SubscriptionEvent,
    TaskNotFound,
    UserRecord,
    WriteOp,
    WriteProgram,
)
from caretask.storage.columns import INDEX_COLUMNS, NORM, index_values, side_rows
from caretask.storage.dialect import SQLITE
from caretask.storage.people_sql import (
    Program,
    client_params,
    client_row,
    people_statements,
    user_params,
    user_row,
)
from caretask.storage.search_cache import SearchCache
from caretask.storage.sql_search import stored_task
from caretask.storage.sqlite.checkpoint import Checkpointer
from caretask.storage.sqlite.group_commit import GroupCommitWriter
from caretask.storage.statements import (
    TEXT_DELETE,
    TEXT_INSERT,
    changed_update_sql,
    feed_change,
    feed_params,
    feed_sql,
    next_version,
    statements,
    stored_current,
)
from caretask.storage.subscriptions_sql import (
    Outbox,
    event_row,
    finish_params,
    insert_params,
    kind,
    subscription_row,
    update_params,
    watch,
)
from caretask.storage.subscriptions_sql import statements as subscription_statements

T = TypeVar("T")
_SQL = statements(SQLITE)
_SUBS = subscription_statements(SQLITE)
_PEOPLE = people_statements(SQLITE)
_NO_END = 2**62  # an event number past any
# the errors that are the database's state, not the request's (primary result codes)
_UNAVAILABLE = {
    sqlite3.SQLITE_FULL: ("the database's disk is full; retry later", 10),
    sqlite3.SQLITE_IOERR: ("the database's disk failed to read or write; retry later", 10),
    sqlite3.SQLITE_READONLY: ("the database file cannot be written", 10),
    sqlite3.SQLITE_CANTOPEN: ("the database file cannot be opened", 10),
    sqlite3.SQLITE_BUSY: ("the database is locked by another process; retry later", 1),
}
# below this much free space a write is likely to fail: readiness says not ready
MIN_FREE_BYTES = 1024 * 1024
# after a write failed as a whole, readiness says not ready for this long (or until a
# write commits); then it looks at the disk again, so a server that takes no traffic
# because it is not ready still becomes ready once the disk has room
FAILED_WRITE_SECONDS = 5.0


def _unavailable(error: sqlite3.Error) -> StorageUnavailable | None:
    known = _UNAVAILABLE.get(getattr(error, "sqlite_errorcode", 0) & 0xFF)
    return StorageUnavailable(*known) if known else None


# how often, in virtual-machine instructions, a running search asks whether to stop: a
# fraction of a millisecond apart, and a few calls for a search that takes a millisecond
_CHECK_EVERY = 20_000


class _SearchStop:
    """A search's progress handler: stops its statement (SQLITE_INTERRUPT) once the deadline
    has passed or the search was abandoned. Installed only while that search runs on its
    reader connection, so it can never stop another request's statement."""

    __slots__ = ("abandoned", "deadline", "timed_out", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.deadline = float("inf")
        self.abandoned = False
        self.timed_out = False

    def start(self) -> None:
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout

    def __call__(self) -> int:
        if self.abandoned:
            return 1
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0


class SQLiteStorage:
    def __init__(self, path: str, readers: int = 4, search_timeout: float | None = None) -> None:
        self._path = path
        self._search_timeout = search_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # this thread's connection first: it puts the file in WAL mode before the writer's
        # and the checkpointer's threads connect (connections racing to switch the
        # journal mode get "database is locked" at once, without the busy timeout)
        self._connection()
        self._checkpointer = Checkpointer(path, self._connection)
        self._writer = GroupCommitWriter(
            self._connection, self._checkpointer.after_commit, self._checkpointer.after_failure
        )
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._reader_count = readers
        self._reading = 0  # reads handed to the reader threads and not yet done
        # readiness has a thread of its own: long searches may hold every reader
        self._health = ThreadPoolExecutor(1, thread_name_prefix="sqlite-health")
        self._cache = SearchCache()
        self._on_events: Callable[[], None] | None = None

    # --- plumbing --------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # storage.sqlite.checkpoint does it
            conn.execute("PRAGMA journal_size_limit=0")  # the WAL file's size is its content
            conn.execute("PRAGMA mmap_size=1073741824")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _lookup(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A lookup by a unique key, run on the calling (event loop) thread: it takes tens
        of microseconds, less than handing it to a reader thread and back (two GIL hand-
        offs and a wake-up, a large share of a read's CPU when profiled). A WAL reader
        does not wait for writers. Anything that may read many rows goes to _read."""
        try:
            return fn(self._connection())
        except sqlite3.Error as error:
            raise _unavailable(error) or error from None

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        self._reading += 1
        try:
            return await loop.run_in_executor(self._readers, lambda: fn(self._connection()))
        except sqlite3.Error as error:
            raise _unavailable(error) or error from None
        finally:
            self._reading -= 1

    def pool_stats(self) -> PoolStats:
        busy = min(self._reading, self._reader_count)
        return PoolStats(self._reader_count, busy, self._writer.queued())

    async def expire_subscriptions(self, now: int) -> int:
        if not await self._read(lambda conn: conn.execute(_SUBS.expiring, (now,)).fetchone()):
            return 0
        return await self._write(lambda conn: conn.execute(_SUBS.expire, (now,)).rowcount)

    async def subscription_backlog(self) -> int:
        return int(self._lookup(lambda conn: conn.execute(_SUBS.backlog).fetchone()[0]))

    async def _write(self, fn: Callable[[sqlite3.Connection], T], durable: bool = True) -> T:
        try:
            return await self._writer.submit(fn, durable)
        except sqlite3.Error as error:
            raise _unavailable(error) or error from None

    # --- tasks -----------------------------------------------------------------------------

    @staticmethod
    def _insert_side_rows(conn: sqlite3.Connection, pk: int, index: TaskIndex) -> None:
        for table, rows in side_rows(pk, index):
            conn.executemany(_SQL.side_inserts[table], rows)

    async def create_task(self, task_id: str, build: BuildFirst) -> StoredTask:
        def run(conn: sqlite3.Connection, box: Outbox) -> StoredTask:
            # built here, under the write lock: its lastUpdated is taken there (feed_horizon)
            new = build()
            self._insert(conn, task_id, new, box)
            return StoredTask(task_id, 1, new.resource)

        return await self._write_tasks(run)

    async def _write_tasks(self, fn: Callable[[sqlite3.Connection, Outbox], T]) -> T:
        """A write of tasks, with the events it records for subscriptions (the outbox)
        written in its transaction; the subscribers' callback hears of them once committed."""

        def run(conn: sqlite3.Connection) -> tuple[T, bool]:
            rows = tuple(conn.execute(_SUBS.listening).fetchall())
            box = Outbox(watch(rows, SQLITE))
            result = fn(conn, box)
            for pk in sorted(box.pending):
                last = conn.execute(_SUBS.bump, (len(box.pending[pk]), pk)).fetchone()
                if last is not None:  # not deleted meanwhile
                    conn.executemany(_SUBS.insert_event, box.numbered(pk, last[0]))
            return result, bool(box.pending)

        result, recorded = await self._write(run)
        if recorded and self._on_events is not None:
            self._on_events()
        return result

    @staticmethod
    def _matches(conn: sqlite3.Connection, box: Outbox, pk: int) -> tuple[int, ...]:
        assert box.watch is not None
        return box.matches(conn.execute(box.watch.sql, (*box.watch.params, pk)).fetchone())

    def _insert(
        self, conn: sqlite3.Connection, task_id: str, new: NewVersion, box: Outbox
    ) -> tuple[Any, ...]:
        """Write a new task; its row as `_SQL.current` reads it."""
        body = orjson.dumps(new.resource).decode()
        values = index_values(new.index)
        pk = conn.execute(_SQL.insert_task, (task_id, 1, new.last_updated, *values, body)).lastrowid
        assert pk is not None
        if new.index.description_norm is not None:
            conn.execute(TEXT_INSERT, (pk, new.index.description_norm))
        conn.execute(_SQL.insert_version, (pk, 1, new.last_updated, body))
        self._insert_side_rows(conn, pk, new.index)
        if box.watch is not None:
            after = self._matches(conn, box, pk)
            box.record(None, after, task_id, 1, kind(1, new.index.status), new.last_updated)
        return (pk, 1, body, *values)

    async def read_task(self, task_id: str) -> StoredTask | None:
        def run(conn: sqlite3.Connection) -> StoredTask | None:
            row = conn.execute(_SQL.read, (task_id,)).fetchone()
            return stored_task(row) if row else None

        return self._lookup(run)

    async def read_version(self, task_id: str, version_id: int) -> StoredTask | None:
        def run(conn: sqlite3.Connection) -> StoredTask | None:
            row = conn.execute(_SQL.vread, (task_id, version_id)).fetchone()
            return stored_task(row) if row else None

        return self._lookup(run)

    async def update_task(
        self, task_id: str, build: BuildVersion, expected_version: int | None = None
    ) -> StoredTask:
        def run(conn: sqlite3.Connection, box: Outbox) -> StoredTask:
            # the writer thread runs one write at a time: nothing comes between read and write
            row = conn.execute(_SQL.current, (task_id,)).fetchone()
            new = next_version(task_id, row, build, expected_version)
            self._replace(conn, task_id, row, new.version_id, new.new, box, new.body)
            return new.stored(task_id)

        return await self._write_tasks(run)

    def _replace(
        self,
        conn: sqlite3.Connection,
        task_id: str,
        row: tuple[Any, ...],
        version_id: int,
        new: NewVersion,
        box: Outbox,
        body: str | None = None,
    ) -> tuple[Any, ...]:
        """Write `new` as version `version_id` of the task whose row (as `_SQL.current`
        reads it) is `row`; its new row."""
        if body is None:
            body = orjson.dumps(new.resource).decode()
        pk, index, last_updated = row[0], new.index, new.last_updated
        before = self._matches(conn, box, pk) if box.watch is not None else None
        old = row[3:]
        values = index_values(index)
        changed = [i for i, value in enumerate(values) if value != old[i]]
        conn.execute(
            changed_update_sql(tuple(INDEX_COLUMNS[i] for i in changed)),
            (version_id, last_updated, *(values[i] for i in changed), body, pk),
        )
        conn.execute(_SQL.insert_version, (pk, version_id, last_updated, body))
        for sql in _SQL.side_deletes:
            conn.execute(sql, (pk,))
        old_norm = old[NORM]
        if old_norm != index.description_norm:
            if old_norm is not None:
                conn.execute(TEXT_DELETE, (pk, old_norm))
            if index.description_norm is not None:
                conn.execute(TEXT_INSERT, (pk, index.description_norm))
        self._insert_side_rows(conn, pk, index)
        if before is not None:
            after = self._matches(conn, box, pk)
            event = kind(version_id, index.status)
            box.record(before, after, task_id, version_id, event, last_updated)
        return (pk, version_id, body, *values)

    async def transact(self, program: Callable[[], WriteProgram[T]]) -> T:
        def run(conn: sqlite3.Connection, box: Outbox) -> T:
            # one write of the group commit: its own SAVEPOINT, so it commits or rolls back
            # whole; every writer of the file is held off while it runs (no Serialize needed)
            steps = program()
            rows: dict[str, tuple[Any, ...] | None] = {}
            result: Any = None
            try:
                while True:
                    result = self._step(conn, steps.send(result), rows, box)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

        return await self._write_tasks(run)

    def _step(
        self,
        conn: sqlite3.Connection,
        op: WriteOp,
        rows: dict[str, tuple[Any, ...] | None],
        box: Outbox,
    ) -> Any:
        if isinstance(op, Current):
            if op.task_id not in rows:
                rows[op.task_id] = conn.execute(_SQL.current, (op.task_id,)).fetchone()
            return stored_current(op.task_id, rows[op.task_id])
        if isinstance(op, Find):
            # it runs holding every writer off: held to the search timeout as searches are
            stop = _SearchStop(self._search_timeout)
            plan = sql_search.plan_search(op.query, SearchCache(), SQLITE)
            stop.start()
            conn.set_progress_handler(stop, _CHECK_EVERY)
            try:
                sql, params = next(plan)
                while True:
                    sql, params = plan.send(conn.execute(sql, params).fetchall())
            except StopIteration as done:
                return done.value.tasks
            except sqlite3.OperationalError:
                if stop.timed_out:
                    raise StorageUnavailable(
                        "the conditional search did not finish within the search timeout "
                        "(CARETASK_SEARCH_TIMEOUT); narrow it, or retry later"
                    ) from None
                raise
            finally:
                conn.set_progress_handler(None, 0)
        if isinstance(op, Serialize):
            return None
        if isinstance(op, Insert):
            rows[op.task_id] = self._insert(conn, op.task_id, op.new, box)
            return StoredTask(op.task_id, 1, op.new.resource)
        row = rows.get(op.task_id)
        if row is None:
            raise TaskNotFound(op.task_id)
        rows[op.task_id] = self._replace(conn, op.task_id, row, row[1] + 1, op.new, box)
        return StoredTask(op.task_id, row[1] + 1, op.new.resource)

    async def search(self, query: SearchQuery) -> SearchResult:
        stop = _SearchStop(self._search_timeout)

        def run(conn: sqlite3.Connection) -> SearchResult:
            plan = sql_search.plan_search(query, self._cache, SQLITE)
            stop.start()  # the time limit counts from here, not from the wait for a reader
            conn.set_progress_handler(stop, _CHECK_EVERY)
            try:
                sql, params = next(plan)
                while True:
                    sql, params = plan.send(conn.execute(sql, params).fetchall())
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            except sqlite3.OperationalError:
                if stop.timed_out:
                    raise SearchTimedOut from None
                raise
            finally:
                conn.set_progress_handler(None, 0)

        try:
            return await self._read(run)
        except asyncio.CancelledError:
            # the caller gave up (its client left): a search still waiting for a reader
            # never starts, a running one is stopped at its next check
            stop.abandoned = True
            raise

    async def history(self, task_id: str, count: int, offset: int) -> tuple[int, list[StoredTask]]:
        def run(conn: sqlite3.Connection) -> tuple[int, list[StoredTask]]:
            row = conn.execute(_SQL.history_head, (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            rows = conn.execute(_SQL.history, (task_id, row[0], count, offset)).fetchall()
            return row[1], [stored_task(r) for r in rows]

        return await self._read(run)

    async def feed_horizon(self) -> int:
        """The time as read by a (non-durable) work item of the writer thread: it runs
        inside BEGIN IMMEDIATE, so no write of any process is in flight; every write takes
        its lastUpdated under that lock too, so the earlier ones are committed (and seen by
        any read that starts after the item's group commits) and the later ones are
        stamped later. Not so `caretask import`, which stamps its batches before it
        writes them: a feed read while an import runs may miss its tasks."""
        return await self._write(lambda conn: now_instant()[1], durable=False)

    async def changes(
        self, since: int, before: FeedPosition, at: int | None, count: int
    ) -> list[Change]:
        sql, params = feed_sql(SQLITE, at is not None), feed_params(since, before, at, count)
        return await self._read(lambda conn: [feed_change(r) for r in conn.execute(sql, params)])

    # --- subscriptions -------------------------------------------------------------------

    def on_events(self, callback: Callable[[], None]) -> None:
        """`callback` runs (on the event loop) after each write of this process that
        recorded subscription events has committed: delivery need not wait for its poll."""
        self._on_events = callback

    async def create_subscription(
        self, subscription_id: str, draft: SubscriptionDraft, secret: str, now: int
    ) -> StoredSubscription:
        params = insert_params(subscription_id, draft, secret, now)
        return await self._write(
            lambda conn: subscription_row(conn.execute(_SUBS.insert, params).fetchone())
        )

    async def read_subscription(self, subscription_id: str) -> StoredSubscription | None:
        def run(conn: sqlite3.Connection) -> StoredSubscription | None:
            row = conn.execute(_SUBS.read, (subscription_id,)).fetchone()
            return subscription_row(row) if row else None

        return self._lookup(run)

    async def update_subscription(
        self, subscription_id: str, draft: SubscriptionDraft, expected_version: int | None
    ) -> StoredSubscription:
        def run(conn: sqlite3.Connection) -> StoredSubscription:
            row = conn.execute(_SUBS.current, (subscription_id,)).fetchone()
            if row is None:
                raise TaskNotFound(subscription_id)
            if expected_version is not None and row[1] != expected_version:
                raise StaleVersion(subscription_id, row[1])
            return subscription_row(
                conn.execute(_SUBS.update, update_params(draft, row[0])).fetchone()
            )

        return await self._write(run)

    async def delete_subscription(self, subscription_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(_SUBS.current, (subscription_id,)).fetchone()
            if row is None:
                return False
            conn.execute(_SUBS.delete_events, (row[0],))
            conn.execute(_SUBS.delete, (row[0],))
            return True

        return await self._write(run)

    async def search_subscriptions(
        self,
        endpoint: str | None,
        statuses: Sequence[str],
        count: int,
        offset: int,
        owner: str | None = None,
    ) -> tuple[int, list[StoredSubscription]]:
        clause, params = _SUBS.search(endpoint, statuses, owner)

        def run(conn: sqlite3.Connection) -> tuple[int, list[StoredSubscription]]:
            (total,) = conn.execute(_SUBS.count + clause, params).fetchone()
            page = conn.execute(
                f"{_SUBS.page}{clause} ORDER BY pk LIMIT ? OFFSET ?", (*params, count, offset)
            ).fetchall()
            return total, [subscription_row(r) for r in page]

        return await self._read(run)

    async def subscription_events(
        self, subscription_id: str, after: int, through: int | None, limit: int, resources: bool
    ) -> list[SubscriptionEvent]:
        sql = _SUBS.events_with_resources if resources else _SUBS.events
        params = (subscription_id, after, _NO_END if through is None else through, limit)
        return await self._read(lambda conn: [event_row(r) for r in conn.execute(sql, params)])

    async def claim_deliveries(
        self, owner: str, now: int, lease: int, limit: int
    ) -> list[StoredSubscription]:
        # a read first: a poll that finds nothing due writes nothing
        if not await self._read(lambda conn: conn.execute(_SUBS.due, (now, now, now)).fetchone()):
            return []
        params = (owner, now + lease, now, now, now, limit)
        return await self._write(
            lambda conn: [subscription_row(r) for r in conn.execute(_SUBS.claim, params)],
            durable=False,
        )

    async def finish_delivery(
        self, subscription_id: str, owner: str, outcome: DeliveryOutcome
    ) -> bool:
        params = finish_params(subscription_id, owner, outcome)
        return await self._write(lambda conn: conn.execute(_SUBS.finish, params).rowcount > 0)

    async def purge_events(self, before: int) -> int:
        return await self._write(lambda conn: conn.execute(_SUBS.purge, (before,)).rowcount)

    # --- clients and keys ------------------------------------------------------------------

    async def create_client(self, record: ClientRecord) -> None:
        params = client_params(record, int(time.time()))
        await self._write(lambda conn: conn.execute(_PEOPLE.insert_client, params))

    async def get_client(self, client_id: str) -> ClientRecord | None:
        def run(conn: sqlite3.Connection) -> ClientRecord | None:
            row = conn.execute(_PEOPLE.get_client, (client_id,)).fetchone()
            return None if row is None else client_row(row)

        return self._lookup(run)

    async def revoke_client(self, client_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(_SQL.revoke_client, (int(time.time()), client_id)).rowcount > 0

        return await self._write(run)

    async def list_clients(self) -> list[ClientRecord]:
        return await self._read(
            lambda conn: [client_row(r) for r in conn.execute(_PEOPLE.list_clients)]
        )

    async def rotate_client_secret(self, client_id: str, new_hash: str, until: int) -> bool:
        params = (until, new_hash, client_id)
        return await self._write(lambda c: c.execute(_PEOPLE.rotate_secret, params).rowcount > 0)

    # --- people and their grants -----------------------------------------------------------

    async def _people(self, program: Callable[[], Program[T]]) -> T:
        """A people_sql program in one write transaction."""

        def run(conn: sqlite3.Connection) -> T:
            steps = program()
            try:
                step = next(steps)
                while True:
                    cur = conn.execute(step.sql, step.params)
                    step = steps.send((cur.fetchall(), cur.rowcount))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

        return await self._write(run)

    async def create_user(self, record: UserRecord) -> bool:
        params = user_params(record, int(time.time()))
        return await self._write(lambda c: c.execute(_PEOPLE.insert_user, params).rowcount > 0)

    async def get_user(self, username: str) -> UserRecord | None:
        def run(conn: sqlite3.Connection) -> UserRecord | None:
            row = conn.execute(_PEOPLE.get_user, (username,)).fetchone()
            return None if row is None else user_row(row)

        return self._lookup(run)

    async def list_users(self) -> list[UserRecord]:
        return await self._read(
            lambda conn: [user_row(r) for r in conn.execute(_PEOPLE.list_users)]
        )

    async def disable_user(self, username: str) -> bool:
        params = (int(time.time()), username)
        return await self._write(lambda c: c.execute(_PEOPLE.disable_user, params).rowcount > 0)

    async def set_password(self, username: str, password_hash: str) -> bool:
        now = int(time.time())
        return await self._people(
            lambda: people_sql.new_password(_PEOPLE, username, password_hash, now)
        )

    async def save_code(self, code_hash: str, grant: Grant, expires_at: int) -> None:
        now = int(time.time())
        await self._people(lambda: people_sql.save_code(_PEOPLE, code_hash, grant, expires_at, now))

    async def redeem_code(self, code_hash: str, now: int) -> Redeemed:
        return await self._people(lambda: people_sql.redeem_code(_PEOPLE, code_hash, now))

    async def save_refresh(self, token_hash: str, grant: Grant, expires_at: int) -> None:
        now = int(time.time())
        await self._people(
            lambda: people_sql.save_refresh(_PEOPLE, token_hash, grant, expires_at, now)
        )

    async def rotate_refresh(
        self, token_hash: str, new_hash: str, now: int, expires_at: int, client_id: str
    ) -> Redeemed:
        return await self._people(
            lambda: people_sql.rotate_refresh(
                _PEOPLE, token_hash, new_hash, now, expires_at, client_id
            )
        )

    # --- audit trail -----------------------------------------------------------------------

    async def record_audit(self, records: Sequence[AuditRecord]) -> None:
        batch = encode_batch(records)
        sql = audit_sql.insert(SQLITE)
        # not worth an fsync of its own: a crash may lose the last batches anyway (http.audit)
        await self._write(lambda conn: conn.execute(sql, batch), durable=False)

    async def audit_batches(
        self, client_id: str | None, since: int | None, after_seq: int, limit: int
    ) -> list[tuple[int, str]]:
        sql, params = audit_sql.select(SQLITE, client_id, since, after_seq, limit)
        return await self._read(lambda conn: conn.execute(sql, params).fetchall())

    async def signing_key(self) -> bytes:
        def run(conn: sqlite3.Connection) -> str:
            fresh = base64.b64encode(secrets.token_bytes(32)).decode()
            conn.execute(_SQL.insert_key, (fresh, int(time.time())))
            (secret,) = conn.execute(_SQL.select_key).fetchone()
            return str(secret)

        return base64.b64decode(await self._write(run))

    async def ping(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._health, self._check_writable)

    def _check_writable(self) -> None:
        """Without writing: the writer thread runs and its last group did not fail lately,
        the file and its directory (for the WAL) are writable, the disk has room, and the
        database answers."""
        failed_at = self._writer.failed_at
        if not self._writer.alive() or (
            failed_at is not None and time.monotonic() - failed_at < FAILED_WRITE_SECONDS
        ):
            raise StorageUnavailable("the database's last writes failed", 10)
        folder = os.path.dirname(os.path.abspath(self._path))
        if not (os.access(self._path, os.W_OK) and os.access(folder, os.W_OK)):
            raise StorageUnavailable(*_UNAVAILABLE[sqlite3.SQLITE_READONLY])
        disk = os.statvfs(folder)
        if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
            raise StorageUnavailable(*_UNAVAILABLE[sqlite3.SQLITE_FULL])
        try:
            self._connection().execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error as error:
            raise _unavailable(error) or StorageUnavailable("the database cannot be read") from None

    async def close(self) -> None:
        self._writer.close()
        self._checkpointer.close()
        self._readers.shutdown(wait=True)
        self._health.shutdown(wait=False)  # a probe stuck on a sick disk must not hold us
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
