"""The audit trail's SQL, shared by both engines (`?` placeholders)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from caretask.domain.audit import AuditRecord

INSERT = (
    "INSERT INTO audit_events (recorded, client_id, interaction, method, resource_id, "
    "version_id, query, address, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMNS = (
    "seq, recorded, client_id, interaction, method, resource_id, version_id, query, address, status"
)


def insert_rows(records: Sequence[AuditRecord]) -> list[tuple[Any, ...]]:
    return [record[:9] for record in records]


def select(
    client_id: str | None, since: int | None, after_seq: int, limit: int
) -> tuple[str, list[Any]]:
    """Oldest first by sequence: rows from several servers interleave in commit order."""
    where, params = ["seq > ?"], [after_seq]
    if client_id is not None:
        where.append("client_id = ?")
        params.append(client_id)
    if since is not None:
        where.append("recorded >= ?")
        params.append(since)
    sql = f"SELECT {_COLUMNS} FROM audit_events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
    return sql, [*params, limit]


def record(row: Sequence[Any]) -> AuditRecord:
    seq, recorded, client, interaction, method, rid, vid, query, address, status = row
    return AuditRecord(recorded, client, interaction, method, rid, vid, query, address, status, seq)
