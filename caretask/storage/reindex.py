"""Re-computing every stored task's search index after the index extraction changed.

Runs inside `caretask migrate` (under its lock), so servers never see a half-built index
of a schema they could already use: `serve` migrates before it listens.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import sqlalchemy as sa

from caretask.domain.indexing import INDEX_VERSION, extract
from caretask.storage.columns import (
    SIDE_DELETES,
    index_update_sql,
    index_values,
    pyformat,
    side_rows,
)

log = logging.getLogger(__name__)
BATCH = 2_000


def _sql(connection: sa.Connection, sql: str) -> str:
    return pyformat(sql) if connection.dialect.name == "postgresql" else sql


def stored_index_version(connection: sa.Connection) -> int:
    row = connection.exec_driver_sql(
        "SELECT value FROM caretask_meta WHERE key = 'index_version'"
    ).fetchone()
    return int(row[0]) if row else 0


def reindex_if_stale(connection: sa.Connection) -> int:
    """Re-index all tasks when the stored index is older than this code's; the count done."""
    if stored_index_version(connection) >= INDEX_VERSION:
        return 0
    body = "resource::text" if connection.dialect.name == "postgresql" else "resource"
    select = _sql(connection, f"SELECT pk, {body} FROM tasks WHERE pk > ? ORDER BY pk LIMIT ?")
    update = _sql(connection, index_update_sql())
    deletes = [_sql(connection, sql) for sql in SIDE_DELETES]
    done, last = 0, 0
    while rows := connection.exec_driver_sql(select, (last, BATCH)).fetchall():
        updates: list[Any] = []
        inserts: dict[str, list[Any]] = {}
        for pk, resource in rows:
            index = extract(orjson.loads(resource))
            updates.append((*index_values(index), pk))
            for sql, side in side_rows(pk, index):
                inserts.setdefault(sql, []).extend(side)
        pks = [(pk,) for pk, _ in rows]
        connection.exec_driver_sql(update, updates)
        for sql in deletes:
            connection.exec_driver_sql(sql, pks)
        for sql, side in inserts.items():
            connection.exec_driver_sql(_sql(connection, sql), side)
        done += len(rows)
        last = rows[-1][0]
        log.info("re-indexed %d tasks", done)
    if connection.dialect.name == "sqlite":  # normalised descriptions may have changed
        connection.exec_driver_sql("INSERT INTO task_text (task_text) VALUES ('rebuild')")
    connection.exec_driver_sql(
        _sql(connection, "DELETE FROM caretask_meta WHERE key = ?"), ("index_version",)
    )
    connection.exec_driver_sql(
        _sql(connection, "INSERT INTO caretask_meta (key, value) VALUES (?, ?)"),
        ("index_version", str(INDEX_VERSION)),
    )
    return done
