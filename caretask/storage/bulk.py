"""Bulk writes and reads for `caretask import` and `caretask export`.

A synchronous path with the drivers used directly: a batch job has no event loop to share,
and executemany over thousands of rows is what makes a million tasks load in a minute.
The SQL and column order are the same as the servers' (storage.columns).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from caretask.storage.columns import (
    INDEX_COLUMNS,
    SIDE_DELETES,
    SIDE_INSERTS,
    SIDE_TABLES,
    TASK_COLUMNS,
    TEXT_DELETE,
    TEXT_INSERT,
    pyformat,
    update_task_sql,
)
from caretask.storage.urls import DatabaseURL


@dataclass(slots=True)
class BulkRow:
    """One prepared task: validated, stamped as version 1, indexed."""

    line: int
    id: str
    body: str  # the stored JSON, stamped with versionId 1
    index: tuple[Any, ...]  # index_values order
    strings: list[tuple[str, str, str]]
    tokens: list[tuple[str, str | None, str]]
    refs: list[tuple[str, str, str]]
    # the validated line, if stamping it over a stored version takes something from that
    # version (else only versionId differs): a Restamp then makes the row anew
    source: str | None = None


# (row, the stored resource, the new version id) -> the row stamped as that version
Restamp = Callable[[BulkRow, dict[str, Any], int], BulkRow]


_NORM = INDEX_COLUMNS.index("description_norm")


class BulkStore:
    """One connection, one writer; `write` adds rows inside the current transaction."""

    def __init__(self, url: DatabaseURL) -> None:
        self.is_pg = url.is_postgresql
        self._journal = "wal"
        if self.is_pg:
            import psycopg

            self._conn: Any = psycopg.connect(url.libpq_url(), autocommit=True)
        else:
            self._conn = sqlite3.connect(url.sqlite_path, timeout=60, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA cache_size=-262144")  # 256 MiB while loading
        cast = "::jsonb" if self.is_pg else ""
        marks = ", ".join("?" * (len(INDEX_COLUMNS) + 4))
        self._insert_task = self._sql(
            f"INSERT INTO tasks (pk, id, {TASK_COLUMNS}) VALUES (?, {marks}{cast})"
        )
        self._update_task = self._sql(update_task_sql(cast))
        self._insert_version = self._sql(
            "INSERT INTO task_versions (task_pk, version_id, last_updated, resource) "
            f"VALUES (?, ?, ?, ?{cast})"
        )
        self._deletes = [self._sql(s) for s in SIDE_DELETES]
        self._side = {table: self._sql(s) for table, s in SIDE_INSERTS.items()}

    def _sql(self, sql: str) -> str:
        return pyformat(sql) if self.is_pg else sql

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(self._sql(sql), params)
        return cur.fetchall() if cur.description else []

    def _insert(self, sql: str, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        """Plain inserts: executemany on SQLite, COPY on PostgreSQL (several times faster)."""
        if not rows:
            return
        if not self.is_pg:
            self._conn.executemany(sql, rows)
            return
        with self._conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.is_pg:
            with self._conn.cursor() as cur:
                cur.executemany(sql, rows)
        else:
            self._conn.executemany(sql, rows)

    # --- transactions ----------------------------------------------------------------------

    def begin(self) -> None:
        self._run("BEGIN" if self.is_pg else "BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._run("COMMIT")

    def rollback(self) -> None:
        self._run("ROLLBACK")

    def _is_empty(self) -> bool:
        return not self._run("SELECT 1 FROM tasks LIMIT 1")

    def begin_load(self) -> list[str] | None:
        """Begin the load's first transaction. Into an empty database, drop the indexes
        (the statements that rebuild them are returned for finish_load) and, on SQLite,
        leave WAL for a rollback journal while loading: the journal then holds only the few
        pages that existed, where the WAL held a second copy of every page written and
        the checkpoint a third (17 s of a million-task load). Another connection keeps
        the database in WAL; the load then runs there, just slower."""
        if not self.is_pg and self._is_empty():  # outside a transaction, as the switch must be
            self._journal = self._run("PRAGMA journal_mode=DELETE")[0][0]
        self.begin()  # asked again inside: the decision that counts is under the lock
        return self._drop_indexes() if self._is_empty() else None

    def finish_load(self, deferred: list[str] | None) -> None:
        """Commit the last transaction, after rebuilding what begin_load deferred."""
        if deferred is not None:
            self._fill_text_index()
            self._create_indexes(deferred)
        self.commit()
        self._restore_journal()
        self.analyze()

    def _restore_journal(self) -> None:
        if self._journal != "wal":
            self._run("PRAGMA journal_mode=WAL")
            self._journal = "wal"

    def _drop_indexes(self) -> list[str]:
        """Drop the task tables' secondary indexes inside the current transaction; the
        statements that recreate them. Building an index once from sorted keys costs a
        fraction of maintaining it row by row: a million-task load into an empty database
        went from 194 to 84 s. Indexes behind constraints (primary keys, unique ids)
        stay, since the load itself looks ids up. A crash before commit rolls the drops back
        with the rows: DDL is transactional on both engines."""
        tables = tuple(["tasks", "task_versions", *(t for t, _ in SIDE_TABLES)])
        marks = ", ".join("?" * len(tables))
        if self.is_pg:
            found = self._run(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i "
                "WHERE i.schemaname = current_schema() "
                f"AND i.tablename IN ({marks}) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                "WHERE c.conindid = to_regclass(quote_ident(i.indexname)))",
                tables,
            )
        else:
            found = self._run(
                "SELECT name, sql FROM sqlite_schema WHERE type = 'index' "
                f"AND sql IS NOT NULL AND tbl_name IN ({marks})",
                tables,
            )
        for name, _ in found:
            self._run(f'DROP INDEX "{name}"')
        return [definition for _, definition in found]

    def _create_indexes(self, statements: list[str]) -> None:
        if not self.is_pg:
            self._run("PRAGMA threads=4")  # sorter helper threads for CREATE INDEX
        for statement in statements:
            self._conn.execute(statement)

    def _fill_text_index(self) -> None:
        """SQLite's trigram table for loads that deferred it (PostgreSQL's is an index)."""
        if not self.is_pg:
            self._run(
                "INSERT INTO task_text (rowid, description_norm) SELECT pk, description_norm "
                "FROM tasks WHERE description_norm IS NOT NULL"
            )

    def analyze(self) -> None:
        """Refresh the planner's statistics after a bulk load (outside a transaction):
        without them PostgreSQL picked plans 100x slower on a freshly loaded million."""
        if self.is_pg:  # VACUUM too: it marks pages all-visible, for index-only counts
            self._run("VACUUM (ANALYZE) tasks, task_versions, task_strings, task_tokens, task_refs")
        else:
            self._run("PRAGMA analysis_limit=2000")
            self._run("ANALYZE")

    def close(self) -> None:
        try:
            self._restore_journal()  # an aborted load leaves the database as it found it
        finally:
            self._conn.close()

    # --- writing ---------------------------------------------------------------------------

    def _allocate_pks(self, count: int) -> list[int]:
        if self.is_pg:
            rows = self._run(
                "SELECT nextval(pg_get_serial_sequence('tasks', 'pk')) FROM generate_series(1, ?)",
                (count,),
            )
            return [r[0] for r in rows]
        top = self._run("SELECT COALESCE(MAX(pk), 0) FROM tasks")[0][0]
        return list(range(top + 1, top + 1 + count))

    def _existing(self, ids: list[str]) -> dict[str, tuple[int, int, str | None]]:
        """pk, version and description_norm of those ids that are already tasks."""
        found: dict[str, tuple[int, int, str | None]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for task_id, pk, version, norm in self._run(
                f"SELECT id, pk, version_id, description_norm FROM tasks WHERE id IN ({marks})",
                tuple(chunk),
            ):
                found[task_id] = (pk, version, norm)
        return found

    def _resources(self, pks: list[int]) -> dict[int, dict[str, Any]]:
        """The current resource of each of these tasks."""
        body = "resource::text" if self.is_pg else "resource"
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(pks), 500):
            chunk = pks[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for pk, resource in self._run(
                f"SELECT pk, {body} FROM tasks WHERE pk IN ({marks})", tuple(chunk)
            ):
                found[pk] = orjson.loads(resource)
        return found

    def write(
        self,
        rows: list[BulkRow],
        last_updated: int,
        restamp: Restamp,
        *,
        text_index: bool = True,
    ) -> tuple[int, int]:
        """Store the rows (ids already stored get a new version); (created, updated).
        `text_index` False: the load fills SQLite's text index at its end (finish_load),
        from the tasks as they are then, so no write may touch it before."""
        created = updated = 0
        start = 0
        while start < len(rows):
            # a repeated id must see its earlier row written: split the batch before it
            seen: set[str] = set()
            end = start
            while end < len(rows) and rows[end].id not in seen:
                seen.add(rows[end].id)
                end += 1
            c, u = self._write_distinct(rows[start:end], last_updated, restamp, text_index)
            created, updated, start = created + c, updated + u, end
        return created, updated

    def _write_distinct(
        self, rows: list[BulkRow], last_updated: int, restamp: Restamp, text_index: bool
    ) -> tuple[int, int]:
        existing = self._existing([r.id for r in rows])
        previous = self._resources(
            [existing[r.id][0] for r in rows if r.id in existing and r.source is not None]
        )
        new = [r for r in rows if r.id not in existing]
        pks = self._allocate_pks(len(new)) if new else []
        task_rows, version_rows = [], []
        side: dict[str, list[tuple[Any, ...]]] = {t: [] for t in self._side}
        for pk, row in zip(pks, new, strict=True):
            task_rows.append((pk, row.id, 1, last_updated, *row.index, row.body))
            version_rows.append((pk, 1, last_updated, row.body))
            self._collect_side(side, pk, row)
        self._insert(self._insert_task, "tasks", f"pk, id, {TASK_COLUMNS}", task_rows)
        text_rows: list[tuple[int, str]] = []

        updates, stale, text_deletes = [], [], []
        for row in rows:
            if row.id not in existing:
                continue
            pk, version, old_norm = existing[row.id]
            if row.source is not None:
                row = restamp(row, previous[pk], version + 1)
                body = row.body
            else:
                resource = orjson.loads(row.body)
                resource["meta"]["versionId"] = str(version + 1)
                body = orjson.dumps(resource).decode()
            updates.append((version + 1, last_updated, *row.index, body, pk))
            version_rows.append((pk, version + 1, last_updated, body))
            stale.append((pk,))
            self._collect_side(side, pk, row)
            new_norm = row.index[_NORM]
            if text_index and old_norm != new_norm:
                if old_norm is not None:
                    text_deletes.append((pk, old_norm))
                if new_norm is not None:
                    text_rows.append((pk, new_norm))
        self._many(self._update_task, updates)
        for sql in self._deletes:
            self._many(sql, stale)
        self._insert(
            self._insert_version,
            "task_versions",
            "task_pk, version_id, last_updated, resource",
            version_rows,
        )
        for table, columns in SIDE_TABLES:
            self._insert(self._side[table], table, ", ".join(("task_pk", *columns)), side[table])
        if not self.is_pg:
            self._many(TEXT_DELETE, text_deletes)
            self._many(TEXT_INSERT, text_rows)
            # one statement: FTS5 flushes its pending index at every statement end
            if pks and text_index:
                self._run(
                    "INSERT INTO task_text (rowid, description_norm) SELECT pk, "
                    "description_norm FROM tasks WHERE pk BETWEEN ? AND ? "
                    "AND description_norm IS NOT NULL",
                    (pks[0], pks[-1]),
                )
        return len(new), len(updates)

    @staticmethod
    def _collect_side(side: dict[str, list[tuple[Any, ...]]], pk: int, row: BulkRow) -> None:
        side["task_strings"].extend((pk, *s) for s in row.strings)
        side["task_tokens"].extend((pk, *t) for t in row.tokens)
        side["task_refs"].extend((pk, *r) for r in row.refs)

    # --- reading ---------------------------------------------------------------------------

    def export(self, since: int | None = None, batch: int = 2_000) -> Iterator[str]:
        """The current version of every task (changed at or after `since`), oldest pk first."""
        body = "resource::text" if self.is_pg else "resource"
        last = 0
        while True:
            rows = self._run(
                f"SELECT pk, {body} FROM tasks WHERE pk > ? AND last_updated >= ? "
                "ORDER BY pk LIMIT ?",
                (last, since if since is not None else -(2**62), batch),
            )
            if not rows:
                return
            for _, resource in rows:
                yield resource
            last = rows[-1][0]
