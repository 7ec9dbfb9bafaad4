"""Bulk writes and reads: `caretask import`, `caretask export`, `caretask audit`, and the
re-indexing that `caretask migrate` runs.

A synchronous path with the drivers used directly: a batch job has no event loop to share,
and executemany (or COPY) over thousands of rows at a time is what makes a load fast.
The statements and column order are the servers' (storage.statements, storage.columns).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
import sqlalchemy as sa

from caretask.domain.indexing import INDEX_VERSION, extract
from caretask.storage import audit_sql
from caretask.storage.base import SchemaNotCurrent
from caretask.storage.columns import (
    ALIVE,
    NORM,
    SIDE_TABLES,
    TASK_COLUMNS,
    index_values,
    side_rows,
)
from caretask.storage.dialect import DIALECTS, Dialect, for_url
from caretask.storage.statements import TEXT_DELETE, TEXT_INSERT, statements
from caretask.storage.urls import DatabaseURL

log = logging.getLogger(__name__)
BATCH = 2_000  # rows a read or a re-index takes at a time
TEXT_FILL = (
    "INSERT INTO task_text (rowid, description_norm) SELECT pk, description_norm FROM tasks "
    "WHERE description_norm IS NOT NULL"
)


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


def _connect(url: DatabaseURL, read_only: bool) -> Any:
    """A driver connection outside any transaction (autocommit). `read_only`: one that
    cannot write, and writes nothing to open (no journal mode, no side files it can avoid)."""
    if url.is_postgresql:
        pg = psycopg.connect(url.libpq_url(), autocommit=True)
        if read_only:
            pg.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        return pg
    path = url.sqlite_path
    if not read_only:
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB while loading
        return conn
    if not os.path.isfile(path):  # mode=ro would not create it, but say why it is missing
        raise SchemaNotCurrent("the database has no schema; run `caretask migrate`")
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        # A WAL database is read through its -wal and -shm files, which a reader creates
        # when they are missing. Only a file that nobody can write (a read-only file system,
        # or no write permission for anyone, and no -wal) is then read as it is: `immutable`
        # over a file that a server could still be writing would read torn pages.
        if not _frozen(path):
            raise
    return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=60, isolation_level=None)


def _frozen(path: str) -> bool:
    if os.path.exists(path + "-wal"):
        return False
    read_only_fs = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    return read_only_fs or not os.stat(path).st_mode & 0o222


class BulkStore:
    """One connection, one writer; `write` adds rows inside the current transaction."""

    def __init__(self, url: DatabaseURL, *, read_only: bool = False) -> None:
        """`read_only`: for export and audit, which never migrate: SchemaNotCurrent unless
        the database is at this caretask's schema revision."""
        self._setup(_connect(url, read_only), for_url(url), owned=True)
        if read_only:
            try:
                self._check_schema()
            except BaseException:
                self._conn.close()
                raise

    @classmethod
    def over(cls, conn: Any, dialect: Dialect) -> BulkStore:
        """A store on a connection in someone else's transaction (a migration's)."""
        store = cls.__new__(cls)
        store._setup(conn, dialect, owned=False)
        return store

    def _setup(self, conn: Any, dialect: Dialect, owned: bool) -> None:
        self._conn = conn
        self._owned = owned
        self.dialect = dialect
        self._journal = "wal"
        self._sql = statements(dialect)

    def _check_schema(self) -> None:
        from caretask.storage.schema import require_current

        try:
            rows = self._run("SELECT version_num FROM alembic_version")
        except psycopg.errors.UndefinedTable:  # never migrated
            rows = []
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):  # locked, unreadable: not a schema matter
                raise
            rows = []
        require_current(rows[0][0] if rows else None)

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(self.dialect.sql(sql), params)
        return cur.fetchall() if cur.description else []

    def _insert(self, sql: str, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        """Plain inserts, as COPY where the engine has it."""
        if not rows:
            return
        if not self.dialect.copy_in:
            self._conn.executemany(sql, rows)
            return
        with self._conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """executemany of a statement already in the engine's placeholder style."""
        if not rows:
            return
        cur = self._conn.cursor()
        try:
            cur.executemany(sql, rows)
        finally:
            cur.close()

    # --- transactions ----------------------------------------------------------------------

    def begin(self) -> None:
        self._run(self.dialect.begin_write)

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
        the checkpoint a third. Another connection keeps the database in WAL; the load
        then runs there, just slower."""
        if self.dialect.rollback_journal and self._is_empty():  # outside a transaction
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
        fraction of maintaining it row by row. Indexes behind constraints (primary keys,
        unique ids) stay, since the load itself looks ids up. A crash before commit rolls
        the drops back with the rows: DDL is transactional on both engines."""
        found = self._run(self.dialect.loose_indexes)
        for name, _ in found:
            self._run(f'DROP INDEX "{name}"')
        return [definition for _, definition in found]

    def _create_indexes(self, definitions: list[str]) -> None:
        for statement in (*self.dialect.before_index_build, *definitions):
            self._conn.execute(statement)

    def _fill_text_index(self) -> None:
        """SQLite's trigram table for loads that deferred it."""
        if self.dialect.text_table:
            self._run(TEXT_FILL)

    def analyze(self) -> None:
        """Refresh the planner's statistics after a bulk load (outside a transaction):
        without them PostgreSQL picked far slower plans on a freshly loaded table."""
        for statement in self.dialect.analyze:
            self._run(statement)

    def close(self) -> None:
        if not self._owned:
            return
        try:
            self._restore_journal()  # an aborted load leaves the database as it found it
        finally:
            self._conn.close()

    # --- writing ---------------------------------------------------------------------------

    def _allocate_pks(self, count: int) -> list[int]:
        return [r[0] for r in self._run(self.dialect.allocate_pks, (count,))]

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
        body = self.dialect.body("resource")
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
        side: dict[str, list[tuple[Any, ...]]] = {t: [] for t, _ in SIDE_TABLES}
        for pk, row in zip(pks, new, strict=True):
            task_rows.append((pk, row.id, 1, last_updated, *row.index, row.body))
            version_rows.append((pk, 1, last_updated, row.body))
            self._collect_side(side, pk, row)
        self._insert(self._sql.insert_task_with_pk, "tasks", f"pk, id, {TASK_COLUMNS}", task_rows)
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
            new_norm = row.index[NORM]
            if text_index and old_norm != new_norm:
                if old_norm is not None:
                    text_deletes.append((pk, old_norm))
                if new_norm is not None:
                    text_rows.append((pk, new_norm))
        self._many(self._sql.update_task, updates)
        for sql in self._sql.side_deletes:
            self._many(sql, stale)
        self._insert(
            self._sql.insert_version,
            "task_versions",
            "task_pk, version_id, last_updated, resource",
            version_rows,
        )
        for table, columns in SIDE_TABLES:
            sql = self._sql.side_inserts[table]
            self._insert(sql, table, ", ".join(("task_pk", *columns)), side[table])
        if self.dialect.text_table:
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

    # --- re-indexing ------------------------------------------------------------------------

    def reindex_if_stale(self) -> int:
        """Re-index all tasks when the stored index is older than this code's; the count
        done. Runs in the caller's transaction."""
        rows = self._run("SELECT value FROM caretask_meta WHERE key = 'index_version'")
        if rows and int(rows[0][0]) >= INDEX_VERSION:
            return 0
        select = f"SELECT pk, {self.dialect.body('resource')} FROM tasks WHERE pk > ? "
        done, last = 0, 0
        while rows := self._run(select + "ORDER BY pk LIMIT ?", (last, BATCH)):
            updates: list[tuple[Any, ...]] = []
            inserts: dict[str, list[tuple[Any, ...]]] = {}
            for pk, resource in rows:
                index = extract(orjson.loads(resource))
                updates.append((*index_values(index), pk))
                for table, side in side_rows(pk, index):
                    inserts.setdefault(table, []).extend(side)
            pks = [(pk,) for pk, _ in rows]
            self._many(self._sql.update_index, updates)
            for sql in self._sql.side_deletes:
                self._many(sql, pks)
            for table, side in inserts.items():
                self._many(self._sql.side_inserts[table], side)
            done += len(rows)
            last = rows[-1][0]
            log.info("re-indexed %d tasks", done)
        if self.dialect.text_table:  # normalised descriptions may have changed
            self._run("INSERT INTO task_text (task_text) VALUES ('rebuild')")
        self._run("DELETE FROM caretask_meta WHERE key = ?", ("index_version",))
        self._run(
            "INSERT INTO caretask_meta (key, value) VALUES (?, ?)",
            ("index_version", str(INDEX_VERSION)),
        )
        return done

    # --- reading ---------------------------------------------------------------------------

    def export(self, since: int | None = None, batch: int = BATCH) -> Iterator[str]:
        """The current version of every task (changed at or after `since`), oldest pk first;
        not a deleted task's (its tombstone is no Task an import would take): the change
        feed (GET /_history?_since=) lists those deletes."""
        last = 0
        while True:
            rows = self._run(
                f"SELECT t.pk, {self.dialect.body('t.resource')} FROM tasks t "
                f"WHERE t.pk > ? AND t.last_updated >= ? AND {ALIVE} ORDER BY t.pk LIMIT ?",
                (last, since if since is not None else -(2**62), batch),
            )
            if not rows:
                return
            for _, resource in rows:
                yield resource
            last = rows[-1][0]

    def audit_batches(
        self, client_id: str | None, since: int | None, after_seq: int, limit: int
    ) -> list[tuple[int, str]]:
        """As Storage.audit_batches."""
        sql, params = audit_sql.select(self.dialect, client_id, since, after_seq, limit)
        return [(row[0], row[1]) for row in self._conn.execute(sql, params).fetchall()]


def reindex_if_stale(connection: sa.Connection) -> int:
    """BulkStore.reindex_if_stale in a migration's transaction."""
    conn = connection.connection.driver_connection
    return BulkStore.over(conn, DIALECTS[connection.dialect.name]).reindex_if_stale()
