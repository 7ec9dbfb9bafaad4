"""The tasks table's written columns, in one order that both engines bind to."""

from __future__ import annotations

from typing import Any

from caretask.domain.indexing import TaskIndex

TASK_COLUMNS = (
    "version_id, last_updated, status, intent, description, description_norm, subject_ref, "
    "subject_id, owner_ref, requester_ref, group_ref, authored_lo, authored_hi, due_lo, due_hi, "
    "resource"
)


def index_values(index: TaskIndex) -> tuple[Any, ...]:
    """The index columns between last_updated and resource, in TASK_COLUMNS order."""
    return (
        index.status,
        index.intent,
        index.description,
        index.description_norm,
        index.subject_ref,
        index.subject_id,
        index.owner_ref,
        index.requester_ref,
        index.group_ref,
        index.authored_lo,
        index.authored_hi,
        index.due_lo,
        index.due_hi,
    )
