"""The statements both engines run, written once with `?` placeholders and given each
engine's placeholder style and JSON casts by its Dialect."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from caretask.storage.base import (
    BuildVersion,
    Change,
    FeedPosition,
    NewVersion,
    StaleVersion,
    StoredTask,
    TaskNotFound,
)
from caretask.storage.columns import INDEX_COLUMNS, SIDE_DELETES, SIDE_INSERTS, TASK_COLUMNS
from caretask.storage.dialect import Dialect

# SQLite only: its FTS5 trigram table over description_norm, written by hand
TEXT_INSERT = "INSERT INTO task_text (rowid, description_norm) VALUES (?, ?)"
TEXT_DELETE = "INSERT INTO task_text (task_text, rowid, description_norm) VALUES ('delete', ?, ?)"


@dataclass(frozen=True, slots=True)
class Statements:
    insert_task: str  # id, then TASK_COLUMNS
    insert_task_with_pk: str  # pk, id, then TASK_COLUMNS (bulk loads choose the pks)
    update_task: str  # TASK_COLUMNS, then pk
    update_index: str  # INDEX_COLUMNS, then pk (re-indexing)
    insert_version: str  # task_pk, version_id, last_updated, resource
    side_deletes: tuple[str, ...]
    side_inserts: dict[str, str]
    current: str  # pk, version_id, resource, INDEX_COLUMNS of the task with this id
    read: str
    vread: str
    history_head: str  # pk and current version of the task with this id
    history: str  # the versions of a task_pk, newest first, from an offset
    revoke_client: str
    insert_key: str  # the signing key, unless one exists
    select_key: str


@cache
def statements(d: Dialect) -> Statements:
    body, cast, q = d.body, d.json_cast, d.sql
    marks = ", ".join("?" * (len(INDEX_COLUMNS) + 3))
    sets = ", ".join(f"{c} = ?" for c in ("version_id", "last_updated", *INDEX_COLUMNS))
    return Statements(
        insert_task=q(f"INSERT INTO tasks (id, {TASK_COLUMNS}) VALUES (?, {marks}{cast})")
        + d.returning_pk,
        insert_task_with_pk=q(
            f"INSERT INTO tasks (pk, id, {TASK_COLUMNS}) VALUES (?, ?, {marks}{cast})"
        ),
        update_task=q(f"UPDATE tasks SET {sets}, resource = ?{cast} WHERE pk = ?"),
        update_index=q(
            f"UPDATE tasks SET {', '.join(f'{c} = ?' for c in INDEX_COLUMNS)} WHERE pk = ?"
        ),
        insert_version=q(
            "INSERT INTO task_versions (task_pk, version_id, last_updated, resource) "
            f"VALUES (?, ?, ?, ?{cast})"
        ),
        side_deletes=tuple(q(s) for s in SIDE_DELETES),
        side_inserts={table: q(s) for table, s in SIDE_INSERTS.items()},
        current=q(
            f"SELECT pk, version_id, {body('resource')}, {', '.join(INDEX_COLUMNS)} "
            "FROM tasks WHERE id = ?"
        )
        + d.lock_row,
        read=q(f"SELECT id, version_id, {body('resource')} FROM tasks WHERE id = ?"),
        vread=q(
            f"SELECT t.id, v.version_id, {body('v.resource')} FROM tasks t JOIN task_versions v "
            "ON v.task_pk = t.pk WHERE t.id = ? AND v.version_id = ?"
        ),
        history_head=q("SELECT pk, version_id FROM tasks WHERE id = ?"),
        history=q(
            f"SELECT {body('?')}, version_id, {body('resource')} FROM task_versions "
            "WHERE task_pk = ? ORDER BY version_id DESC LIMIT ? OFFSET ?"
        ),
        revoke_client=q(
            "UPDATE clients SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL"
        ),
        insert_key=q(
            "INSERT INTO signing_keys (name, secret, created_at) "
            "VALUES ('access-token', ?, ?) ON CONFLICT (name) DO NOTHING"
        ),
        select_key=q("SELECT secret FROM signing_keys WHERE name = 'access-token'"),
    )


@cache
def feed_sql(d: Dialect, at: bool) -> str:
    """The change feed's page (storage.base.Storage.changes): since, the position to
    start before (3 values), [at,] count. One range of ix_task_versions_feed."""
    replaced = (
        " AND NOT EXISTS (SELECT 1 FROM task_versions n WHERE n.task_pk = v.task_pk "
        "AND n.version_id = v.version_id + 1 AND n.last_updated <= ?)"
        if at
        else ""
    )
    return d.sql(
        f"SELECT t.id, v.version_id, {d.body('v.resource')}, v.last_updated, v.task_pk "
        "FROM task_versions v JOIN tasks t ON t.pk = v.task_pk "
        "WHERE v.last_updated >= ? AND (v.last_updated, v.task_pk, v.version_id) < (?, ?, ?)"
        f"{replaced} ORDER BY v.last_updated DESC, v.task_pk DESC, v.version_id DESC LIMIT ?"
    )


def feed_params(since: int, before: FeedPosition, at: int | None, count: int) -> tuple[Any, ...]:
    return (since, *before, *(() if at is None else (at,)), count)


def feed_change(row: tuple[Any, ...]) -> Change:
    """A row of feed_sql as a Change."""
    return Change(StoredTask(row[0], row[1], orjson.loads(row[2])), (row[3], row[4], row[1]))


def changed_update_sql(changed: tuple[str, ...]) -> str:
    """UPDATE by pk of the version, last_updated, body and only the `changed` index
    columns: SQLite rewrites the entries of every index on a column named in SET, even
    when its value is unchanged, and a task has about twenty indexes."""
    sets = "".join(f"{c} = ?, " for c in changed)
    return f"UPDATE tasks SET version_id = ?, last_updated = ?, {sets}resource = ? WHERE pk = ?"


@dataclass(frozen=True, slots=True)
class NextVersion:
    """What an update writes: the task's pk, its new version and that version's body."""

    pk: int
    version_id: int
    body: str
    new: NewVersion

    def stored(self, task_id: str) -> StoredTask:
        return StoredTask(task_id, self.version_id, self.new.resource)


def next_version(
    task_id: str,
    row: tuple[Any, ...] | None,
    build: BuildVersion,
    expected_version: int | None,
) -> NextVersion:
    """The next version of the task in `row` (pk, version_id, resource text, ...), read
    under the engine's write lock: TaskNotFound without a row, StaleVersion when
    `expected_version` is given and is not the current one."""
    if row is None:
        raise TaskNotFound(task_id)
    pk, current = row[0], row[1]
    if expected_version is not None and current != expected_version:
        raise StaleVersion(task_id, current)
    new = build(StoredTask(task_id, current, orjson.loads(row[2])))
    return NextVersion(pk, current + 1, orjson.dumps(new.resource).decode(), new)


def stored_current(task_id: str, row: tuple[Any, ...] | None) -> StoredTask | None:
    """A row as `current` reads it (pk, version_id, resource text, ...) as a StoredTask."""
    if row is None:
        return None
    return StoredTask(task_id, row[1], orjson.loads(row[2]))
