"""What the two engines' SQL differs in, as data: one Dialect per engine.

Every statement is written once with `?` placeholders; `Dialect.sql` gives it the engine's
placeholder style. The rest are the forms that cannot be shared: how a JSON body is cast,
how the description is searched by substring, how a bulk load writes and rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass

from caretask.storage.urls import DatabaseURL


def pyformat(sql: str) -> str:
    """`?` placeholders to psycopg's `%s` (a literal % becomes %%)."""
    return sql.replace("%", "%%").replace("?", "%s")


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str  # SQLAlchemy's name for it
    pyformat: bool  # placeholders are `%s` (psycopg), not `?` (sqlite3)
    json_cast: str  # after a JSON body's placeholder, on writes
    json_text: str  # after a JSON column, to read it as text
    # SQLite keeps an FTS5 trigram table (task_text) over description_norm, written by
    # hand; PostgreSQL's trigram index is on the column itself and needs no writes
    text_table: bool
    false: str
    true: str
    # an expression over an indexed column that its index cannot serve, so that a range
    # on it is tested row by row along the pk order instead of read whole and sorted
    off_index: str
    # PostgreSQL's planner, unlike SQLite's, walked the pk index to fill a page even when
    # a date window held few tasks: a capped count of the window decides first
    probes_date_window: bool
    begin_write: str  # takes the write lock at once (SQLite: no upgrade deadlock later)
    returning_pk: str  # appended to an INSERT of a task to read its pk back
    lock_row: str  # appended to the read of the row an update rewrites
    # serialises migrators inside their transaction (SQLite's take a file lock instead)
    migration_lock: str
    # bulk loads
    copy_in: bool  # plain inserts as COPY (several times faster than executemany)
    allocate_pks: str  # `count` fresh task pks
    loose_indexes: str  # the secondary indexes a load into an empty database drops
    before_index_build: tuple[str, ...]
    analyze: tuple[str, ...]  # refresh the planner's statistics after a load
    rollback_journal: bool  # load into an empty database without the WAL (see bulk)

    def sql(self, sql: str) -> str:
        """A statement written with `?` placeholders, in this engine's style."""
        return pyformat(sql) if self.pyformat else sql

    def body(self, column: str) -> str:
        """A JSON column read as text."""
        return f"{column}{self.json_text}"


_TASK_TABLES = "('tasks', 'task_versions', 'task_strings', 'task_tokens', 'task_refs')"

SQLITE = Dialect(
    name="sqlite",
    pyformat=False,
    json_cast="",
    json_text="",
    text_table=True,
    false="0",
    true="1",
    off_index="+{}",
    probes_date_window=False,
    begin_write="BEGIN IMMEDIATE",
    returning_pk="",  # the cursor's lastrowid
    lock_row="",  # one writer thread per process, BEGIN IMMEDIATE across processes
    migration_lock="",
    copy_in=False,
    allocate_pks=(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "SELECT (SELECT COALESCE(MAX(pk), 0) FROM tasks) + i FROM n"
    ),
    loose_indexes=(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'index' "
        f"AND sql IS NOT NULL AND tbl_name IN {_TASK_TABLES}"
    ),
    before_index_build=("PRAGMA threads=4",),  # sorter helper threads for CREATE INDEX
    analyze=("PRAGMA analysis_limit=2000", "ANALYZE"),
    rollback_journal=True,
)

POSTGRESQL = Dialect(
    name="postgresql",
    pyformat=True,
    json_cast="::jsonb",
    json_text="::text",
    text_table=False,
    false="false",
    true="true",
    off_index="({} || '')",
    probes_date_window=True,
    begin_write="BEGIN",
    returning_pk=" RETURNING pk",
    lock_row=" FOR UPDATE",  # holds off every other writer of this task, on any server
    migration_lock="SELECT pg_advisory_xact_lock(727274)",
    copy_in=True,
    allocate_pks=(
        "SELECT nextval(pg_get_serial_sequence('tasks', 'pk')) FROM generate_series(1, ?)"
    ),
    loose_indexes=(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i "
        f"WHERE i.schemaname = current_schema() AND i.tablename IN {_TASK_TABLES} "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
        "WHERE c.conindid = to_regclass(quote_ident(i.indexname)))"
    ),
    before_index_build=(),
    # VACUUM too: it marks pages all-visible, for index-only counts
    analyze=("VACUUM (ANALYZE) tasks, task_versions, task_strings, task_tokens, task_refs",),
    rollback_journal=False,
)

DIALECTS = {d.name: d for d in (SQLITE, POSTGRESQL)}


def for_url(url: DatabaseURL) -> Dialect:
    return SQLITE if url.is_sqlite else POSTGRESQL
