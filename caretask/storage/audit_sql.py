"""The audit trail's SQL, shared by both engines."""

from __future__ import annotations

from typing import Any

from caretask.storage.dialect import Dialect


def insert(d: Dialect) -> str:
    """INSERT of one batch: first_recorded, last_recorded, clients, records."""
    return d.sql(
        "INSERT INTO audit_batches (first_recorded, last_recorded, clients, records) "
        f"VALUES (?, ?, ?, ?{d.json_cast})"
    )


def select(
    d: Dialect, client_id: str | None, since: int | None, after_seq: int, limit: int
) -> tuple[str, list[Any]]:
    """Batches past `after_seq` that may hold matching records, oldest first. The client
    test is a substring match (a superset); domain.audit.select filters exactly."""
    where: list[str] = ["seq > ?"]
    params: list[Any] = [after_seq]
    if client_id is not None:
        where.append("clients LIKE ?")
        params.append(f"%{client_id}%")
    if since is not None:
        where.append("last_recorded >= ?")
        params.append(since)
    sql = (
        f"SELECT seq, {d.body('records')} FROM audit_batches WHERE {' AND '.join(where)} "
        "ORDER BY seq LIMIT ?"
    )
    return d.sql(sql), [*params, limit]
