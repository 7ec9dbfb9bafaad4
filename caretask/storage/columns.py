"""The tasks table's written columns and the side-table rows, shared by both engines."""

from __future__ import annotations

from typing import Any

from caretask.domain.indexing import TaskIndex

INDEX_COLUMNS = (
    "status",
    "intent",
    "description",
    "description_norm",
    "subject_ref",
    "subject_id",
    "owner_ref",
    "requester_ref",
    "group_ref",
    "authored_lo",
    "authored_hi",
    "due_lo",
    "due_hi",
    "priority",
    "modified_lo",
    "modified_hi",
    "period_lo",
    "period_hi",
)
TASK_COLUMNS = ", ".join(("version_id", "last_updated", *INDEX_COLUMNS, "resource"))

# side tables that hold multi-valued parameters: (table, its columns after task_pk)
SIDE_TABLES = (
    ("task_strings", ("param", "norm", "value")),
    ("task_tokens", ("param", "system", "code")),
    ("task_refs", ("param", "ref", "ref_id")),
)
SIDE_INSERTS = {
    table: f"INSERT INTO {table} (task_pk, {', '.join(cols)}) "
    f"VALUES (?, {', '.join('?' * len(cols))})"
    for table, cols in SIDE_TABLES
}
SIDE_DELETES = tuple(f"DELETE FROM {table} WHERE task_pk = ?" for table, _ in SIDE_TABLES)


# SQLite only: the FTS5 trigram table over description_norm (PostgreSQL indexes the column)
TEXT_INSERT = "INSERT INTO task_text (rowid, description_norm) VALUES (?, ?)"
TEXT_DELETE = "INSERT INTO task_text (task_text, rowid, description_norm) VALUES ('delete', ?, ?)"


def pyformat(sql: str) -> str:
    """`?` placeholders to psycopg's `%s` (a literal % becomes %%)."""
    return sql.replace("%", "%%").replace("?", "%s")


def insert_task_sql(json_cast: str = "") -> str:
    """INSERT of a new task: id, then TASK_COLUMNS; the engine's cast for the JSON body."""
    marks = ", ".join("?" * (len(INDEX_COLUMNS) + 3))
    return f"INSERT INTO tasks (id, {TASK_COLUMNS}) VALUES (?, {marks}{json_cast})"


def update_task_sql(json_cast: str = "") -> str:
    """UPDATE of TASK_COLUMNS by pk."""
    sets = ", ".join(f"{c} = ?" for c in ("version_id", "last_updated", *INDEX_COLUMNS))
    return f"UPDATE tasks SET {sets}, resource = ?{json_cast} WHERE pk = ?"


def changed_update_sql(changed: tuple[str, ...]) -> str:
    """UPDATE by pk of the version, last_updated, body and only the `changed` index
    columns: SQLite rewrites the entries of every index on a column named in SET, even
    when its value is unchanged, and a task has about twenty indexes."""
    sets = "".join(f"{c} = ?, " for c in changed)
    return f"UPDATE tasks SET version_id = ?, last_updated = ?, {sets}resource = ? WHERE pk = ?"


def index_update_sql() -> str:
    """UPDATE of the index columns only (re-indexing), by pk."""
    return f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in INDEX_COLUMNS)} WHERE pk = ?"


def index_values(index: TaskIndex) -> tuple[Any, ...]:
    """The index columns between last_updated and resource, in TASK_COLUMNS order."""
    return tuple(getattr(index, column) for column in INDEX_COLUMNS)


def side_rows(pk: int, index: TaskIndex) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The INSERT statement and rows of each side table that has rows for this task."""
    out = []
    for table, rows in (
        ("task_strings", index.strings),
        ("task_tokens", index.tokens),
        ("task_refs", index.refs),
    ):
        if rows:
            out.append((SIDE_INSERTS[table], [(pk, *row) for row in rows]))
    return out
