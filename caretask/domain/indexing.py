"""The search-index values of a stored Task (what the storage engines put in columns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from caretask.domain.dates import parse_range
from caretask.domain.references import split_reference
from caretask.domain.task_rules import GROUP_EXTENSION
from caretask.domain.text import normalize


@dataclass(slots=True)
class TaskIndex:
    status: str
    intent: str
    description: str | None
    description_norm: str | None
    subject_ref: str | None = None
    subject_id: str | None = None
    owner_ref: str | None = None
    requester_ref: str | None = None
    group_ref: str | None = None
    authored_lo: int | None = None
    authored_hi: int | None = None
    due_lo: int | None = None
    due_hi: int | None = None
    # multi-valued string parameters as (param, normalised, exact) rows
    strings: list[tuple[str, str, str]] = field(default_factory=list)


def _ref(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        parsed = split_reference(value["reference"])
        if parsed:
            return f"{parsed[0]}/{parsed[1]}"
    return None


def labels(task: dict[str, Any]) -> list[str]:
    """Canvas labels: inputs typed with the text 'label' that carry a valueString."""
    out = []
    for item in task.get("input", []):
        kind = item.get("type", {})
        if kind.get("text", "").lower() == "label" and isinstance(item.get("valueString"), str):
            out.append(item["valueString"])
    return out


def extract(task: dict[str, Any]) -> TaskIndex:
    description = task.get("description")
    index = TaskIndex(
        status=task["status"],
        intent=task["intent"],
        description=description,
        description_norm=normalize(description) if description else None,
        owner_ref=_ref(task.get("owner")),
        requester_ref=_ref(task.get("requester")),
    )
    subject = _ref(task.get("for"))
    if subject:
        index.subject_ref, index.subject_id = subject, subject.split("/", 1)[1]
    for ext in task.get("extension", []):
        if ext.get("url") == GROUP_EXTENSION:
            index.group_ref = _ref(ext.get("valueReference"))
            break
    authored = parse_range(task["authoredOn"]) if "authoredOn" in task else None
    if authored:
        index.authored_lo, index.authored_hi = authored
    end = task.get("restriction", {}).get("period", {}).get("end")
    due = parse_range(end) if isinstance(end, str) else None
    if due:
        index.due_lo, index.due_hi = due
    seen = set()
    for label in labels(task):
        row = ("label", normalize(label), label)
        if row not in seen:
            seen.add(row)
            index.strings.append(row)
    return index
