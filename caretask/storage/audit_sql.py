"""The audit trail's SQL, shared by both engines (`?` placeholders; the engine casts)."""

from __future__ import annotations

from typing import Any

INSERT = (
    "INSERT INTO audit_batches (first_recorded, last_recorded, clients, records) "
    "VALUES (?, ?, ?, ?{json_cast})"
)


def select(
    client_id: str | None, since: int | None, after_seq: int, limit: int, text_cast: str = ""
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
        f"SELECT seq, records{text_cast} FROM audit_batches WHERE {' AND '.join(where)} "
        "ORDER BY seq LIMIT ?"
    )
    return sql, [*params, limit]
