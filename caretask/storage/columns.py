"""Where each search parameter's values are stored, and the tasks row's written columns:
the one table that the search SQL, the index writes and the bulk paths all read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from caretask.domain.indexing import TaskIndex


@dataclass(frozen=True, slots=True)
class Columns:
    """The tasks columns of a single-valued search parameter."""

    type: str  # the parameter's type: token, reference, date or string
    # token and reference: the value; date: the range's low end; string: the exact text
    column: str
    # date: the range's high end; string: the folded text; reference: the bare id
    other: str | None = None

    @property
    def sort(self) -> str:
        """The column a _sort on this parameter orders by (a date range by its low end)."""
        return self.column


# single-valued parameters; the others (label, code, part-of...) are in the side tables
SEARCH_COLUMNS: dict[str, Columns] = {
    "_id": Columns("token", "id"),
    "status": Columns("token", "status"),
    "intent": Columns("token", "intent"),
    "priority": Columns("token", "priority"),
    "description": Columns("string", "description", "description_norm"),
    "patient": Columns("reference", "subject_ref", "subject_id"),
    "subject": Columns("reference", "subject_ref", "subject_id"),
    "owner": Columns("reference", "owner_ref"),
    "requester": Columns("reference", "requester_ref"),
    "group": Columns("reference", "group_ref"),
    "authored-on": Columns("date", "authored_lo", "authored_hi"),
    "due": Columns("date", "due_lo", "due_hi"),
    "_lastUpdated": Columns("date", "last_updated", "last_updated"),
    "modified": Columns("date", "modified_lo", "modified_hi"),
    "period": Columns("date", "period_lo", "period_hi"),
}
# written by the store itself rather than taken from the index extraction
_ROW_OWN = frozenset({"id", "last_updated"})

# the index extraction's columns (TaskIndex attributes of the same names), in the one
# order of every statement and value tuple that writes them
INDEX_COLUMNS = tuple(
    dict.fromkeys(
        name
        for spec in SEARCH_COLUMNS.values()
        for name in (spec.column, spec.other)
        if name is not None and name not in _ROW_OWN
    )
)
TASK_COLUMNS = ", ".join(("version_id", "last_updated", *INDEX_COLUMNS, "resource"))

# side tables that hold multi-valued parameters: (table, its columns after task_pk)
SIDE_TABLES = (
    ("task_strings", ("param", "norm", "value")),
    ("task_tokens", ("param", "system", "code")),
    ("task_refs", ("param", "ref", "ref_id")),
)
# the side table of each parameter type whose values are not in a tasks column
SIDE_TABLE = {"string": "task_strings", "token": "task_tokens", "reference": "task_refs"}
SIDE_INSERTS = {
    table: f"INSERT INTO {table} (task_pk, {', '.join(cols)}) "
    f"VALUES (?, {', '.join('?' * len(cols))})"
    for table, cols in SIDE_TABLES
}
SIDE_DELETES = tuple(f"DELETE FROM {table} WHERE task_pk = ?" for table, _ in SIDE_TABLES)
NORM = INDEX_COLUMNS.index("description_norm")
# a deleted task's row (alias t) keeps id and last_updated; its index columns are NULL,
# its status and intent '' (indexing.extract), and it has no side-table or text rows
ALIVE = "t.status <> ''"


def index_values(index: TaskIndex) -> tuple[Any, ...]:
    """The index columns between last_updated and resource, in TASK_COLUMNS order."""
    return tuple(getattr(index, column) for column in INDEX_COLUMNS)


def side_rows(pk: int, index: TaskIndex) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Each side table that has rows for this task, with its rows."""
    out = []
    for table, rows in (
        ("task_strings", index.strings),
        ("task_tokens", index.tokens),
        ("task_refs", index.refs),
    ):
        if rows:
            out.append((table, [(pk, *row) for row in rows]))
    return out
