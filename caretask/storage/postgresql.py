"""The PostgreSQL engine: psycopg 3 with an async connection pool, JSONB bodies.

The SQL is the same as SQLite's (shared search builder, `?` rewritten to `%s`); writes
lock the task row (`FOR UPDATE`) so that servers sharing the database never lose an update.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Sequence
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from caretask.domain.audit import AuditRecord, encode_batch
from caretask.domain.indexing import TaskIndex
from caretask.domain.search_params import SearchQuery
from caretask.storage import audit_sql, sql_search
from caretask.storage.base import (
    BuildVersion,
    ClientRecord,
    SearchResult,
    StaleVersion,
    StoredTask,
    TaskNotFound,
)
from caretask.storage.columns import (
    SIDE_DELETES,
    index_values,
    insert_task_sql,
    pyformat,
    side_rows,
    update_task_sql,
)
from caretask.storage.search_cache import SearchCache
from caretask.storage.sql_search import stored_task

_pg = pyformat


_INSERT_TASK = _pg(insert_task_sql("::jsonb") + " RETURNING pk")
_UPDATE_TASK = _pg(update_task_sql("::jsonb"))
_SIDE_DELETES = [_pg(sql) for sql in SIDE_DELETES]
_CURRENT = _pg("SELECT pk, version_id, resource::text FROM tasks WHERE id = ? FOR UPDATE")
_INSERT_VERSION = _pg(
    "INSERT INTO task_versions (task_pk, version_id, last_updated, resource) "
    "VALUES (?, ?, ?, ?::jsonb)"
)


class PostgreSQLStorage:
    def __init__(self, conninfo: str, pool_size: int | None = None) -> None:
        size = pool_size or int(os.environ.get("CARETASK_DB_POOL_SIZE") or 10)
        self._pool = AsyncConnectionPool(
            conninfo, min_size=1, max_size=size, open=False, kwargs={"autocommit": True}
        )
        self._opened = False
        self._cache = SearchCache()

    async def _open(self) -> AsyncConnectionPool:
        if not self._opened:
            await self._pool.open(wait=True, timeout=30)
            self._opened = True
        return self._pool

    @staticmethod
    async def _insert_side_rows(conn: AsyncConnection, pk: int, index: TaskIndex) -> None:
        for sql, rows in side_rows(pk, index):
            async with conn.cursor() as cur:
                await cur.executemany(_pg(sql), rows)

    async def create_task(
        self, task_id: str, resource: dict[str, Any], index: TaskIndex, last_updated: int
    ) -> StoredTask:
        body = orjson.dumps(resource).decode()
        pool = await self._open()
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                _INSERT_TASK, (task_id, 1, last_updated, *index_values(index), body)
            )
            pk = (await cur.fetchone())[0]  # type: ignore[index]
            await conn.execute(_INSERT_VERSION, (pk, 1, last_updated, body))
            await self._insert_side_rows(conn, pk, index)
        return StoredTask(task_id, 1, resource)

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        pool = await self._open()
        async with pool.connection() as conn:
            cur = await conn.execute(_pg(sql), params)
            return await cur.fetchone()

    async def read_task(self, task_id: str) -> StoredTask | None:
        row = await self._one(
            "SELECT id, version_id, resource::text FROM tasks WHERE id = ?", (task_id,)
        )
        return stored_task(row) if row else None

    async def read_version(self, task_id: str, version_id: int) -> StoredTask | None:
        row = await self._one(
            "SELECT t.id, v.version_id, v.resource::text FROM tasks t JOIN task_versions v "
            "ON v.task_pk = t.pk WHERE t.id = ? AND v.version_id = ?",
            (task_id, version_id),
        )
        return stored_task(row) if row else None

    async def update_task(
        self, task_id: str, build: BuildVersion, expected_version: int | None = None
    ) -> StoredTask:
        pool = await self._open()
        async with pool.connection() as conn, conn.transaction():
            # the row lock holds off every other writer of this task, on any server
            cur = await conn.execute(_CURRENT, (task_id,))
            row = await cur.fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            pk, current = row[0], row[1]
            if expected_version is not None and current != expected_version:
                raise StaleVersion(task_id, current)
            resource, index, last_updated = build(
                StoredTask(task_id, current, orjson.loads(row[2]))
            )
            version = current + 1
            body = orjson.dumps(resource).decode()
            await conn.execute(
                _UPDATE_TASK, (version, last_updated, *index_values(index), body, pk)
            )
            await conn.execute(_INSERT_VERSION, (pk, version, last_updated, body))
            for sql in _SIDE_DELETES:
                await conn.execute(sql, (pk,))
            await self._insert_side_rows(conn, pk, index)
        return StoredTask(task_id, version, resource)

    async def search(self, query: SearchQuery) -> SearchResult:
        plan = sql_search.plan_search(
            query, self._cache, columns="t.id, t.version_id, t.resource::text"
        )
        pool = await self._open()
        async with pool.connection() as conn:
            try:
                sql, params = next(plan)
                while True:
                    cur = await conn.execute(_pg(sql), params)
                    sql, params = plan.send(await cur.fetchall())
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def history(self, task_id: str, count: int, offset: int) -> tuple[int, list[StoredTask]]:
        pool = await self._open()
        async with pool.connection() as conn:
            cur = await conn.execute(
                _pg("SELECT pk, version_id FROM tasks WHERE id = ?"), (task_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            cur = await conn.execute(
                _pg(
                    "SELECT ?::text, version_id, resource::text FROM task_versions "
                    "WHERE task_pk = ? ORDER BY version_id DESC LIMIT ? OFFSET ?"
                ),
                (task_id, row[0], count, offset),
            )
            return row[1], [stored_task(r) for r in await cur.fetchall()]

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        """One autocommitted statement; the number of rows it changed."""
        pool = await self._open()
        async with pool.connection() as conn:
            cur = await conn.execute(_pg(sql), params)
            return cur.rowcount

    async def create_client(self, record: ClientRecord) -> None:
        await self._execute(
            "INSERT INTO clients (client_id, name, secret_hash, scope, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (record.client_id, record.name, record.secret_hash, record.scope, int(time.time())),
        )

    async def get_client(self, client_id: str) -> ClientRecord | None:
        row = await self._one(
            "SELECT client_id, name, secret_hash, scope, revoked_at FROM clients "
            "WHERE client_id = ?",
            (client_id,),
        )
        if row is None:
            return None
        return ClientRecord(row[0], row[1], row[2], row[3], revoked=row[4] is not None)

    async def revoke_client(self, client_id: str) -> bool:
        changed = await self._execute(
            "UPDATE clients SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",
            (int(time.time()), client_id),
        )
        return changed > 0

    async def record_audit(self, records: Sequence[AuditRecord]) -> None:
        await self._execute(audit_sql.INSERT.format(json_cast="::jsonb"), encode_batch(records))

    async def audit_batches(
        self, client_id: str | None, since: int | None, after_seq: int, limit: int
    ) -> list[tuple[int, str]]:
        sql, params = audit_sql.select(client_id, since, after_seq, limit, "::text")
        pool = await self._open()
        async with pool.connection() as conn:
            cur = await conn.execute(_pg(sql), params)
            return [(row[0], row[1]) for row in await cur.fetchall()]

    async def signing_key(self) -> bytes:
        fresh = base64.b64encode(secrets.token_bytes(32)).decode()
        await self._execute(
            "INSERT INTO signing_keys (name, secret, created_at) "
            "VALUES ('access-token', ?, ?) ON CONFLICT (name) DO NOTHING",
            (fresh, int(time.time())),
        )
        row = await self._one("SELECT secret FROM signing_keys WHERE name = 'access-token'", ())
        return base64.b64decode(row[0])

    async def ping(self) -> None:
        # a short wait: a readiness probe must answer before the load balancer gives up
        pool = await self._open()
        async with pool.connection(timeout=5) as conn:
            await conn.execute("SELECT version_num FROM alembic_version")

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
