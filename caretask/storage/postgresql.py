"""The PostgreSQL engine: psycopg 3 with an async connection pool, JSONB bodies.

The SQL is the same as SQLite's (shared search builder, `?` rewritten to `%s`); writes
lock the task row (`FOR UPDATE`) so that servers sharing the database never lose an update.

A pooled connection may have been closed by the database's side while it sat idle (a
restart, pg_terminate_backend, an idle timeout, a network reset); that shows only when it
is next used. Every unit of work therefore runs through `_run`: if the connection breaks
before the work could have committed (a read, or a write whose COMMIT was not yet sent),
it is discarded and the work runs once more on a new connection; if that fails too, or a
COMMIT's outcome is unknown, the request gets StorageUnavailable (a 503), never a 500.
Checking each connection as it leaves the pool would cost a round trip per request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from caretask.config import DEFAULT_POOL_SIZE
from caretask.domain.audit import AuditRecord, encode_batch
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
from caretask.storage.columns import index_values, side_rows
from caretask.storage.dialect import POSTGRESQL
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
from caretask.storage.statements import (
    feed_change,
    feed_params,
    feed_sql,
    next_version,
    statements,
    stored_current,
)
from caretask.storage.subscriptions_sql import (
    Outbox,
    Watch,
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
_SQL = statements(POSTGRESQL)
_SUBS = subscription_statements(POSTGRESQL)
_PEOPLE = people_statements(POSTGRESQL)
_NO_END = 2**62  # an event number past any
# the channel on which a transaction that recorded subscription events tells every server
_CHANNEL = "caretask_events"
_NOTIFY = f"NOTIFY {_CHANNEL}"
RECONNECT_PAUSE = 1.0  # seconds between attempts to listen again
_AUDIT_INSERT = audit_sql.insert(POSTGRESQL)
_SERIALIZE = "SELECT pg_advisory_xact_lock(%s)"
TRANSACT_ATTEMPTS = 3  # runs of a write program that a deadlock rolled back
# SQLSTATE class 40: the database rolled the transaction back, not for anything it did
_ROLLED_BACK = (errors.TransactionRollback, errors.DeadlockDetected, errors.SerializationFailure)
CONNECT_SECONDS = 5  # libpq's connect_timeout for connections made outside the pool
# seconds the pool keeps retrying a connection it failed to make before it gives up; the
# next request that finds the pool empty starts again at once (its own backoff grows to
# minutes, which would delay recovery after an outage that long)
RECONNECT_SECONDS = 10.0
_UNREACHABLE = "the database is not reachable; retry later"
READ_ONLY = "25006"  # SQLSTATE read_only_sql_transaction
_BUSY = "the server is busy: every database connection is in use; retry later"
POOL_WAIT_SECONDS = 30.0  # the most a request waits for a pooled connection


def _pool_wait(search_timeout: float | None) -> float:
    """A request waits for a pooled connection about as long as one statement may run
    (the longest statements are searches), not for a queue of them."""
    if search_timeout is None:
        return POOL_WAIT_SECONDS
    return min(POOL_WAIT_SECONDS, search_timeout + 2)


_READY = (
    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on', "
    "(SELECT version_num FROM alembic_version)"
)


# storage.base.Storage.feed_horizon. statement_timestamp(): this statement's start, so
# before its read of pg_stat_activity; LEAST skips NULL (no other transaction); writes
# come from client backends (autovacuum's long transactions would only hold it back)
_HORIZON = (
    "SELECT floor(extract(epoch FROM LEAST(statement_timestamp(), (SELECT min(xact_start) "
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend'))) * 1000000)::bigint"
)


class _Broken(Exception):
    """The connection broke before the work could have committed: safe to run again."""


def _session_settings(search_timeout: float | None) -> str:
    """Set once on each pooled connection: a SET LOCAL in a transaction around each search
    would cost two more round trips a search. JIT compilation of a search's
    large expressions cannot be interrupted, by the timeout or a cancel, and buys nothing on
    these short statements; parallel workers would let one search take several cores. The
    time limit holds for every statement of the server's connections: only searches come
    near it."""
    settings = "SET jit = off; SET max_parallel_workers_per_gather = 0"
    if search_timeout is not None:
        settings += f"; SET statement_timeout = {max(1, round(search_timeout * 1000))}"
    return settings


class PostgreSQLStorage:
    def __init__(
        self, conninfo: str, pool_size: int | None = None, search_timeout: float | None = None
    ) -> None:
        size = pool_size or DEFAULT_POOL_SIZE
        self._conninfo = conninfo
        self._settings = _session_settings(search_timeout)
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=size,
            open=False,
            timeout=_pool_wait(search_timeout),
            kwargs={"autocommit": True},
            reconnect_timeout=RECONNECT_SECONDS,
            configure=self._configure,
        )
        self._opened = False
        self._opening = asyncio.Lock()
        # set when a new connection could not be made, cleared when one works again:
        # meanwhile a request does not wait for the pool to reconnect (it backs off)
        self._down = False
        self._outside = asyncio.Semaphore(size)  # connections made outside the pool at once
        self._probe: AsyncConnection | None = None  # readiness's own connection
        self._probe_lock = asyncio.Lock()
        self._cache = SearchCache()
        self._on_events: Callable[[], None] | None = None
        self._listener: asyncio.Task[None] | None = None

    async def _configure(self, conn: AsyncConnection) -> None:
        await conn.execute(self._settings)  # several statements: no parameters, simple protocol

    async def _open(self) -> AsyncConnectionPool:
        if not self._opened:
            # the first callers may come at once; the pool's open() must run only once
            async with self._opening:
                if not self._opened:
                    await self._pool.open(wait=True, timeout=30)
                    self._opened = True
        return self._pool

    # --- connections -----------------------------------------------------------------------

    async def _run(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        transaction: bool = False,
        pipelined: bool = False,
    ) -> T:
        """`work` on a pooled connection (in one transaction if `transaction`), run again
        on a new connection if the pooled one turns out broken before anything committed.
        `pipelined`: in psycopg's pipeline mode (attempt)."""
        pool = await self._open()
        if not self._down or pool.get_stats().get("pool_available", 0):
            try:
                async with pool.connection() as conn:
                    result = await _attempt(conn, work, transaction, pipelined)
                self._down = False
                return result
            except _Broken:
                pass  # the pool discards it and makes another in the background
            except PoolTimeout:
                # every connection the pool may hold is lent out: busy, not down; with
                # fewer, the pool could not make the ones it needed
                stats = pool.get_stats()
                if stats.get("pool_size", 0) >= pool.max_size:
                    raise StorageUnavailable(_BUSY) from None
                self._down = True
                raise StorageUnavailable(_UNREACHABLE) from None
        async with self._outside:
            try:
                conn = await AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=CONNECT_SECONDS
                )
                await self._configure(conn)
            except psycopg.Error:
                self._down = True
                raise StorageUnavailable(_UNREACHABLE) from None
            async with conn:
                if self._down:  # it is back: let the pool reconnect now, not after its backoff
                    await pool.check()
                try:
                    result = await _attempt(conn, work, transaction, pipelined)
                except _Broken:
                    raise StorageUnavailable(_UNREACHABLE) from None
                self._down = False
                return result

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        async def run(conn: AsyncConnection) -> Any:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

        return await self._run(run)

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        """One statement in a transaction of its own (an outcome known even if the
        connection breaks); the number of rows it changed."""

        async def run(conn: AsyncConnection) -> int:
            cur = await conn.execute(sql, params)
            return cur.rowcount

        return await self._run(run, transaction=True)

    # --- tasks -----------------------------------------------------------------------------

    @staticmethod
    async def _insert_side_rows(conn: AsyncConnection, pk: int, index: TaskIndex) -> None:
        for table, rows in side_rows(pk, index):
            async with conn.cursor() as cur:
                await cur.executemany(_SQL.side_inserts[table], rows)

    async def create_task(self, task_id: str, build: BuildFirst) -> StoredTask:
        async def run(conn: AsyncConnection, box: Outbox) -> StoredTask:
            # built after BEGIN, so that its lastUpdated is not before the transaction's
            # start (feed_horizon)
            new = build()
            await self._insert(conn, task_id, new, box)
            return StoredTask(task_id, 1, new.resource)

        return await self._write_tasks(run)

    @staticmethod
    def _tasks_work(
        fn: Callable[[AsyncConnection, Outbox], Awaitable[T]], recorded: list[bool]
    ) -> Callable[[AsyncConnection], Awaitable[T]]:
        """`fn` as a unit of work that records the events of its task writes for
        subscriptions (the outbox) in its transaction; `recorded[0]`: whether it did."""

        async def run(conn: AsyncConnection) -> T:
            box = Outbox(None, unread=await conn.execute(_SUBS.listening))
            result = await fn(conn, box)
            # last, in subscription order, after every task lock (subscriptions_sql)
            if box.pending:
                assert _SUBS.bump_all is not None and _SUBS.insert_events is not None
                pks = sorted(box.pending)
                counts = [len(box.pending[pk]) for pk in pks]
                cur = await conn.execute(_SUBS.bump_all, (pks, pks, counts))
                lasts = [(row[0], row[1]) for row in await cur.fetchall()]  # less deleted
                if lasts:
                    await conn.execute(_SUBS.insert_events, box.columns(lasts))
            recorded[0] = bool(box.pending)
            if box.pending:  # other servers' dispatchers hear of it at the commit
                await conn.execute(_NOTIFY)
            return result

        return run

    async def _write_tasks(self, fn: Callable[[AsyncConnection, Outbox], Awaitable[T]]) -> T:
        recorded = [False]
        result = await self._run(self._tasks_work(fn, recorded), transaction=True, pipelined=True)
        self._heard(recorded)
        return result

    def _heard(self, recorded: list[bool]) -> None:
        if recorded[0] and self._on_events is not None:
            self._on_events()

    @staticmethod
    async def _watch(box: Outbox) -> Watch | None:
        """The box's watch, read from its `listening` cursor the first time (in pipeline
        mode, by then answered with an earlier read of the write)."""
        if box.unread is not None:
            cursor, box.unread = box.unread, None
            box.watch = watch(tuple(await cursor.fetchall()), POSTGRESQL)
        return box.watch

    @staticmethod
    async def _matches(conn: AsyncConnection, box: Outbox, pk: int) -> tuple[int, ...]:
        assert box.watch is not None
        cur = await conn.execute(box.watch.sql, (*box.watch.params, pk))
        return box.matches(await cur.fetchone())

    async def _insert(
        self, conn: AsyncConnection, task_id: str, new: NewVersion, box: Outbox
    ) -> int:
        """Write a new task; its pk."""
        body = orjson.dumps(new.resource).decode()
        values = (task_id, 1, new.last_updated, *index_values(new.index), body)
        cur = await conn.execute(_SQL.insert_task, values)
        pk: int = (await cur.fetchone())[0]  # type: ignore[index]
        await conn.execute(_SQL.insert_version, (pk, 1, new.last_updated, body))
        await self._insert_side_rows(conn, pk, new.index)
        if await self._watch(box) is not None:
            after = await self._matches(conn, box, pk)
            box.record(None, after, task_id, 1, kind(1, new.index.status), new.last_updated)
        return pk

    async def read_task(self, task_id: str) -> StoredTask | None:
        row = await self._one(_SQL.read, (task_id,))
        return stored_task(row) if row else None

    async def read_version(self, task_id: str, version_id: int) -> StoredTask | None:
        row = await self._one(_SQL.vread, (task_id, version_id))
        return stored_task(row) if row else None

    async def update_task(
        self, task_id: str, build: BuildVersion, expected_version: int | None = None
    ) -> StoredTask:
        async def run(conn: AsyncConnection, box: Outbox) -> StoredTask:
            cur = await conn.execute(_SQL.current, (task_id,))  # locks the row
            new = next_version(task_id, await cur.fetchone(), build, expected_version)
            await self._replace(conn, task_id, new.pk, new.version_id, new.new, box, new.body)
            return new.stored(task_id)

        return await self._write_tasks(run)

    async def _replace(
        self,
        conn: AsyncConnection,
        task_id: str,
        pk: int,
        version_id: int,
        new: NewVersion,
        box: Outbox,
        body: str,
    ) -> None:
        """Write `new` as version `version_id` of the task whose pk is `pk` (locked)."""
        watching = await self._watch(box) is not None
        before = await self._matches(conn, box, pk) if watching else None
        values = (version_id, new.last_updated, *index_values(new.index), body, pk)
        await conn.execute(_SQL.update_task, values)
        await conn.execute(_SQL.insert_version, (pk, version_id, new.last_updated, body))
        for sql in _SQL.side_deletes:
            await conn.execute(sql, (pk,))
        await self._insert_side_rows(conn, pk, new.index)
        if before is not None:
            after = await self._matches(conn, box, pk)
            event = kind(version_id, new.index.status)
            box.record(before, after, task_id, version_id, event, new.last_updated)

    async def transact(self, program: Callable[[], WriteProgram[T]]) -> T:
        async def program_run(conn: AsyncConnection, box: Outbox) -> T:
            steps = program()
            rows: dict[str, tuple[int, int] | None] = {}  # id: (pk, version) as now written
            result: Any = None
            try:
                while True:
                    result = await self._step(conn, steps.send(result), rows, box)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

        recorded = [False]
        run = self._tasks_work(program_run, recorded)

        # programs lock several rows and keys, in their own orders: two of them can
        # deadlock, and PostgreSQL then rolls one back whole, which can simply run again
        for _ in range(TRANSACT_ATTEMPTS - 1):
            try:
                result = await self._run(run, transaction=True)
                self._heard(recorded)
                return result
            except _ROLLED_BACK:
                continue
        try:
            result = await self._run(run, transaction=True)
            self._heard(recorded)
            return result
        except _ROLLED_BACK:
            raise StorageUnavailable(
                "the transaction kept conflicting with concurrent ones; retry later"
            ) from None

    async def _step(
        self,
        conn: AsyncConnection,
        op: WriteOp,
        rows: dict[str, tuple[int, int] | None],
        box: Outbox,
    ) -> Any:
        if isinstance(op, Current):
            cur = await conn.execute(_SQL.current, (op.task_id,))  # locks the row
            row = await cur.fetchone()
            rows[op.task_id] = None if row is None else (row[0], row[1])
            return stored_current(op.task_id, row)
        if isinstance(op, Find):
            plan = sql_search.plan_search(op.query, SearchCache(), POSTGRESQL)
            try:
                sql, params = next(plan)
                while True:
                    cur = await conn.execute(sql, params)
                    sql, params = plan.send(await cur.fetchall())
            except StopIteration as done:
                return done.value.tasks
        if isinstance(op, Serialize):
            # a transaction-scoped advisory lock on the key's 64-bit hash: a collision only
            # makes two different keys wait for each other
            await conn.execute(_SERIALIZE, (advisory_key(op.key),))
            return None
        if isinstance(op, Insert):
            rows[op.task_id] = (await self._insert(conn, op.task_id, op.new, box), 1)
            return StoredTask(op.task_id, 1, op.new.resource)
        known = rows.get(op.task_id)
        if known is None:
            raise TaskNotFound(op.task_id)
        pk, version = known[0], known[1] + 1
        body = orjson.dumps(op.new.resource).decode()
        await self._replace(conn, op.task_id, pk, version, op.new, box, body)
        rows[op.task_id] = (pk, version)
        return StoredTask(op.task_id, version, op.new.resource)

    async def search(self, query: SearchQuery) -> SearchResult:
        async def run(conn: AsyncConnection) -> SearchResult:
            plan = sql_search.plan_search(query, self._cache, POSTGRESQL)
            # if the task is cancelled (its client left), psycopg cancels the running
            # statement on the server before the connection goes back to the pool
            try:
                sql, params = next(plan)
                while True:
                    cur = await conn.execute(sql, params)
                    sql, params = plan.send(await cur.fetchall())
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            except errors.QueryCanceled:  # statement_timeout (or an operator's cancel)
                raise SearchTimedOut from None

        return await self._run(run)

    async def history(self, task_id: str, count: int, offset: int) -> tuple[int, list[StoredTask]]:
        async def run(conn: AsyncConnection) -> tuple[int, list[StoredTask]]:
            cur = await conn.execute(_SQL.history_head, (task_id,))
            row = await cur.fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            cur = await conn.execute(_SQL.history, (task_id, row[0], count, offset))
            return row[1], [stored_task(r) for r in await cur.fetchall()]

        return await self._run(run)

    async def feed_horizon(self) -> int:
        """The start of the oldest transaction in progress on this database (other than
        this statement's), or this statement's start if that is earlier. Every write
        takes its lastUpdated after its transaction began (BEGIN has returned), so a
        version stamped before
        that instant belongs to a transaction that had ended when pg_stat_activity was
        read (its xact_start is cleared only after its commit is visible): committed, and
        seen by any read that starts afterwards. One in progress then is stamped after
        its xact_start, one that had not shown there yet after that read began.

        Limits: the stamps are the caretask servers' clocks and the horizon the
        database's: exact on one host, and across hosts as exact as their clocks agree
        (NTP; a skew of s lets a change stamped up to s early be missed). Sessions of
        roles that may not see each other's pg_stat_activity rows (not the same role,
        no pg_read_all_stats) are not seen. Any long transaction on the database holds
        the horizon back (a later poll returns those changes again, none is missed).
        `caretask import` stamps its batches before writing them: a feed read while an
        import runs may miss its tasks."""
        row = await self._one(_HORIZON, ())
        return int(row[0])

    async def changes(
        self, since: int, before: FeedPosition, at: int | None, count: int
    ) -> list[Change]:
        sql, params = feed_sql(POSTGRESQL, at is not None), feed_params(since, before, at, count)

        async def run(conn: AsyncConnection) -> list[Change]:
            cur = await conn.execute(sql, params)
            return [feed_change(r) for r in await cur.fetchall()]

        return await self._run(run)

    # --- subscriptions -------------------------------------------------------------------

    def on_events(self, callback: Callable[[], None]) -> None:
        """Also after another server's write on this database: a transaction that records
        events NOTIFYs (delivered at its commit), and a connection of this server LISTENs."""
        self._on_events = callback
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen(callback))

    async def _listen(self, callback: Callable[[], None]) -> None:
        """Hear other servers' events until closed; reconnect after a lost connection (a
        poll covers what was missed meanwhile: the callback only hurries delivery)."""
        while True:
            try:
                async with await AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=CONNECT_SECONDS
                ) as conn:
                    await conn.execute(f"LISTEN {_CHANNEL}")
                    callback()  # whatever was written while we were not listening
                    async for _ in conn.notifies():
                        callback()
            except psycopg.Error:
                await asyncio.sleep(RECONNECT_PAUSE)

    async def expire_subscriptions(self, now: int) -> int:
        if await self._one(_SUBS.expiring, (now,)) is None:
            return 0
        return await self._execute(_SUBS.expire, (now,))

    async def subscription_backlog(self) -> int:
        row = await self._one(_SUBS.backlog, ())
        return int(row[0])

    def pool_stats(self) -> PoolStats:
        stats = self._pool.get_stats()
        size = stats.get("pool_size", 0)
        return PoolStats(
            self._pool.max_size,
            size - stats.get("pool_available", 0),
            stats.get("requests_waiting", 0),
        )

    async def create_subscription(
        self, subscription_id: str, draft: SubscriptionDraft, secret: str, now: int
    ) -> StoredSubscription:
        params = insert_params(subscription_id, draft, secret, now)

        async def run(conn: AsyncConnection) -> StoredSubscription:
            cur = await conn.execute(_SUBS.insert, params)
            return subscription_row(await cur.fetchone())  # type: ignore[arg-type]

        return await self._run(run, transaction=True)

    async def read_subscription(self, subscription_id: str) -> StoredSubscription | None:
        row = await self._one(_SUBS.read, (subscription_id,))
        return subscription_row(row) if row else None

    async def update_subscription(
        self, subscription_id: str, draft: SubscriptionDraft, expected_version: int | None
    ) -> StoredSubscription:
        async def run(conn: AsyncConnection) -> StoredSubscription:
            cur = await conn.execute(_SUBS.current, (subscription_id,))  # locks the row
            row = await cur.fetchone()
            if row is None:
                raise TaskNotFound(subscription_id)
            if expected_version is not None and row[1] != expected_version:
                raise StaleVersion(subscription_id, row[1])
            cur = await conn.execute(_SUBS.update, update_params(draft, row[0]))
            return subscription_row(await cur.fetchone())  # type: ignore[arg-type]

        return await self._run(run, transaction=True)

    async def delete_subscription(self, subscription_id: str) -> bool:
        async def run(conn: AsyncConnection) -> bool:
            cur = await conn.execute(_SUBS.current, (subscription_id,))
            row = await cur.fetchone()
            if row is None:
                return False
            await conn.execute(_SUBS.delete_events, (row[0],))
            await conn.execute(_SUBS.delete, (row[0],))
            return True

        return await self._run(run, transaction=True)

    async def search_subscriptions(
        self,
        endpoint: str | None,
        statuses: Sequence[str],
        count: int,
        offset: int,
        owner: str | None = None,
    ) -> tuple[int, list[StoredSubscription]]:
        clause, params = _SUBS.search(endpoint, statuses, owner)
        count_sql = POSTGRESQL.sql(_SUBS.count + clause)
        page_sql = POSTGRESQL.sql(f"{_SUBS.page}{clause} ORDER BY pk LIMIT ? OFFSET ?")

        async def run(conn: AsyncConnection) -> tuple[int, list[StoredSubscription]]:
            cur = await conn.execute(count_sql, params)
            (total,) = await cur.fetchone()  # type: ignore[misc]
            cur = await conn.execute(page_sql, (*params, count, offset))
            return total, [subscription_row(r) for r in await cur.fetchall()]

        return await self._run(run)

    async def subscription_events(
        self, subscription_id: str, after: int, through: int | None, limit: int, resources: bool
    ) -> list[SubscriptionEvent]:
        sql = _SUBS.events_with_resources if resources else _SUBS.events
        params = (subscription_id, after, _NO_END if through is None else through, limit)

        async def run(conn: AsyncConnection) -> list[SubscriptionEvent]:
            cur = await conn.execute(sql, params)
            return [event_row(r) for r in await cur.fetchall()]

        return await self._run(run)

    async def claim_deliveries(
        self, owner: str, now: int, lease: int, limit: int
    ) -> list[StoredSubscription]:
        params = (owner, now + lease, now, now, now, limit)

        async def run(conn: AsyncConnection) -> list[StoredSubscription]:
            cur = await conn.execute(_SUBS.claim, params)
            return [subscription_row(r) for r in await cur.fetchall()]

        return await self._run(run, transaction=True)

    async def finish_delivery(
        self, subscription_id: str, owner: str, outcome: DeliveryOutcome
    ) -> bool:
        changed = await self._execute(_SUBS.finish, finish_params(subscription_id, owner, outcome))
        return changed > 0

    async def purge_events(self, before: int) -> int:
        return await self._execute(_SUBS.purge, (before,))

    # --- clients, keys, audit --------------------------------------------------------------

    async def create_client(self, record: ClientRecord) -> None:
        await self._execute(_PEOPLE.insert_client, client_params(record, int(time.time())))

    async def get_client(self, client_id: str) -> ClientRecord | None:
        row = await self._one(_PEOPLE.get_client, (client_id,))
        return None if row is None else client_row(row)

    async def revoke_client(self, client_id: str) -> bool:
        changed = await self._execute(_SQL.revoke_client, (int(time.time()), client_id))
        return changed > 0

    async def list_clients(self) -> list[ClientRecord]:
        async def run(conn: AsyncConnection) -> list[ClientRecord]:
            cur = await conn.execute(_PEOPLE.list_clients)
            return [client_row(r) for r in await cur.fetchall()]

        return await self._run(run)

    async def rotate_client_secret(self, client_id: str, new_hash: str, until: int) -> bool:
        params = (until, new_hash, client_id)
        return await self._execute(_PEOPLE.rotate_secret, params) > 0

    # --- people and their grants -----------------------------------------------------------

    async def _people(self, program: Callable[[], Program[T]]) -> T:
        """A people_sql program in one transaction (run again from the start on a new
        connection if the first broke before it committed)."""

        async def run(conn: AsyncConnection) -> T:
            steps = program()
            try:
                step = next(steps)
                while True:
                    cur = await conn.execute(step.sql, step.params)
                    rows = await cur.fetchall() if cur.description is not None else []
                    step = steps.send((rows, cur.rowcount))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

        return await self._run(run, transaction=True)

    async def create_user(self, record: UserRecord) -> bool:
        return await self._execute(_PEOPLE.insert_user, user_params(record, int(time.time()))) > 0

    async def get_user(self, username: str) -> UserRecord | None:
        row = await self._one(_PEOPLE.get_user, (username,))
        return None if row is None else user_row(row)

    async def list_users(self) -> list[UserRecord]:
        async def run(conn: AsyncConnection) -> list[UserRecord]:
            cur = await conn.execute(_PEOPLE.list_users)
            return [user_row(r) for r in await cur.fetchall()]

        return await self._run(run)

    async def disable_user(self, username: str) -> bool:
        return await self._execute(_PEOPLE.disable_user, (int(time.time()), username)) > 0

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

    async def record_audit(self, records: Sequence[AuditRecord]) -> None:
        await self._execute(_AUDIT_INSERT, encode_batch(records))

    async def audit_batches(
        self, client_id: str | None, since: int | None, after_seq: int, limit: int
    ) -> list[tuple[int, str]]:
        sql, params = audit_sql.select(POSTGRESQL, client_id, since, after_seq, limit)

        async def run(conn: AsyncConnection) -> list[tuple[int, str]]:
            cur = await conn.execute(sql, params)
            return [(row[0], row[1]) for row in await cur.fetchall()]

        return await self._run(run)

    async def signing_key(self) -> bytes:
        fresh = base64.b64encode(secrets.token_bytes(32)).decode()
        await self._execute(_SQL.insert_key, (fresh, int(time.time())))
        row = await self._one(_SQL.select_key, ())
        return base64.b64decode(row[0])

    async def ping(self) -> None:
        # a connection of its own: the pool's may all be busy with long searches
        async with self._probe_lock:
            for _ in range(2):  # once more on a new connection if the kept one broke
                try:
                    if self._probe is None or self._probe.closed:
                        self._probe = await AsyncConnection.connect(
                            self._conninfo, autocommit=True, connect_timeout=CONNECT_SECONDS
                        )
                    cur = await self._probe.execute(_READY)
                    read_only, _ = await cur.fetchone()  # type: ignore[misc]
                except psycopg.Error:
                    await self._drop_probe()
                    continue
                except BaseException:  # cancelled (the probe's time ran out): mid-statement
                    await self._drop_probe()
                    raise
                if read_only:
                    raise StorageUnavailable(_unavailable(READ_ONLY) or _UNREACHABLE)
                return
        raise StorageUnavailable(_UNREACHABLE)

    async def _drop_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            with contextlib.suppress(Exception):
                await probe.close()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._drop_probe()
        if self._opened:
            await self._pool.close()


def advisory_key(key: str) -> int:
    """A key as PostgreSQL's advisory locks take it: a signed 64-bit integer."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _unavailable(sqlstate: str | None) -> str | None:
    """What to tell a client when the database refused the work for a state of its own
    that passes (read-only, out of resources, shutting down), or None for an error of the
    work itself. By SQLSTATE class, so that every member of a class is covered."""
    if sqlstate is None:
        return None
    if sqlstate == READ_ONLY:  # a standby, or made read-only
        return "the database accepts no writes (read-only); retry later"
    if sqlstate == "53100":  # disk_full
        return "the database's disk is full; retry later"
    if sqlstate.startswith("53"):  # insufficient resources: memory, connections, limits
        return "the database is out of resources; retry later"
    if sqlstate in ("57P01", "57P02", "57P03"):  # admin/crash shutdown, cannot connect now
        return "the database is restarting; retry later"
    if sqlstate.startswith(("08", "58")):  # connection exception, system (I/O) error
        return _UNREACHABLE
    return None


async def _attempt(
    conn: AsyncConnection,
    work: Callable[[AsyncConnection], Awaitable[T]],
    transaction: bool,
    pipelined: bool = False,
) -> T:
    """Run `work`; _Broken if the connection broke before a COMMIT was sent, and
    StorageUnavailable if it broke during one (the write may or may not be stored).

    Pipelined, statements are sent without waiting for their answers until `work` reads a
    result (or the transaction ends): a task write waits for the database at the reads it
    needs and once at the COMMIT, not after each of its statements."""
    committing = False
    try:
        if not transaction:
            return await work(conn)
        if pipelined:
            async with conn.pipeline(), conn.transaction():
                result = await work(conn)
                committing = True
            return result
        async with conn.transaction():
            result = await work(conn)
            committing = True
        return result
    except errors.QueryCanceled:
        # the connections' statement_timeout (set for searches, which catch it themselves)
        # stopped another statement: the database is too busy to answer in time
        raise StorageUnavailable("the database did not answer in time; retry later") from None
    except psycopg.Error as error:
        if not conn.broken:
            text = _unavailable(error.sqlstate)
            if text is None:
                raise
            raise StorageUnavailable(text) from None
        if committing:
            raise StorageUnavailable(
                "the database connection was lost while committing: the write may or may "
                "not be stored; read it back before repeating it"
            ) from None
        raise _Broken from error
