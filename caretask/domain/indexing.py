"""The search-index values of a stored Task (what the storage engines put in columns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from caretask.domain.dates import parse_range
from caretask.domain.references import split_reference
from caretask.domain.task_rules import GROUP_EXTENSION, is_deleted
from caretask.domain.text import exact, normalize

# Bump when extract() changes what it produces: `caretask migrate` then re-indexes every
# stored task, so searches see old tasks the way they see new ones.
# 3: dates with more than 9 fraction digits are indexed
# 4: a leap second is the last microsecond of its minute; :exact values are NFC
INDEX_VERSION = 4


@dataclass(slots=True)
class TaskIndex:
    status: str
    intent: str
    description: str | None  # NFC (text.exact), for :exact
    description_norm: str | None  # folded (text.normalize); '' for combining marks only
    subject_ref: str | None = None
    subject_id: str | None = None
    owner_ref: str | None = None
    requester_ref: str | None = None
    group_ref: str | None = None
    authored_lo: int | None = None
    authored_hi: int | None = None
    due_lo: int | None = None
    due_hi: int | None = None
    priority: str | None = None
    modified_lo: int | None = None
    modified_hi: int | None = None
    period_lo: int | None = None
    period_hi: int | None = None
    # multi-valued string parameters as (param, folded, NFC) rows
    strings: list[tuple[str, str, str]] = field(default_factory=list)
    # token parameters as (param, system or None, code) rows
    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)
    # reference parameters other than the single-valued columns, as (param, Type/id, id)
    refs: list[tuple[str, str, str]] = field(default_factory=list)


_MIN, _MAX = -(2**62), 2**62  # an open end of a Period


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _range(value: Any) -> tuple[int, int] | None:
    return parse_range(value) if isinstance(value, str) else None


def _period(value: Any) -> tuple[int, int] | None:
    """A Period as one range; an open end reaches to the end of time (FHIR search rules)."""
    period = _dict(value)
    if not period:
        return None
    start, end = _range(period.get("start")), _range(period.get("end"))
    if start is None and end is None:
        return None
    return (start[0] if start else _MIN), (end[1] if end else _MAX)


def _codings(concept: Any) -> list[tuple[str | None, str]]:
    out = []
    for coding in _list(_dict(concept).get("coding")):
        code = _dict(coding).get("code")
        if isinstance(code, str):
            system = coding.get("system")
            out.append((system if isinstance(system, str) else None, code))
    return out


def _identifier(value: Any) -> tuple[str | None, str] | None:
    ident = _dict(value)
    if isinstance(ident.get("value"), str):
        system = ident.get("system")
        return (system if isinstance(system, str) else None), ident["value"]
    return None


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
    if is_deleted(task):
        # '' in the NOT NULL token columns (never a valid code: no search for a status or
        # an intent finds it), nothing else: no side rows, no text (search skips it)
        return TaskIndex(status="", intent="", description=None, description_norm=None)
    description = task.get("description")
    index = TaskIndex(
        status=task["status"],
        intent=task["intent"],
        description=exact(description) if description else description,
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
        row = ("label", normalize(label), exact(label))
        if row not in seen:
            seen.add(row)
            index.strings.append(row)
    if isinstance(task.get("priority"), str):
        index.priority = task["priority"]
    modified = _range(task.get("lastModified"))
    if modified:
        index.modified_lo, index.modified_hi = modified
    period = _period(task.get("executionPeriod"))
    if period:
        index.period_lo, index.period_hi = period
    index.tokens = _tokens(task)
    index.refs = _refs(task)
    for param, concept in _concepts(task):
        for text in _concept_texts(concept):
            row = (f"{param}:text", normalize(text), exact(text))
            if row not in seen:
                seen.add(row)
                index.strings.append(row)
    return index


def _concepts(task: dict[str, Any]) -> list[tuple[str, Any]]:
    """The CodeableConcepts behind the token parameters that support :text."""
    return [
        ("code", task.get("code")),
        ("business-status", task.get("businessStatus")),
        *(("performer", c) for c in _list(task.get("performerType"))),
    ]


def _concept_texts(concept: Any) -> list[str]:
    texts = [_dict(concept).get("text")]
    texts += [_dict(c).get("display") for c in _list(_dict(concept).get("coding"))]
    return [t for t in texts if isinstance(t, str) and t]


def _tokens(task: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    rows: list[tuple[str, str | None, str]] = []
    for ident in _list(task.get("identifier")):
        found = _identifier(ident)
        if found:
            rows.append(("identifier", *found))
    found = _identifier(task.get("groupIdentifier"))
    if found:
        rows.append(("group-identifier", *found))
    for param, concept in _concepts(task):
        rows.extend((param, *c) for c in _codings(concept))
    return list(dict.fromkeys(rows))


def _refs(task: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    pairs = [
        ("focus", task.get("focus")),
        ("encounter", task.get("encounter")),
        *(("based-on", r) for r in _list(task.get("basedOn"))),
        *(("part-of", r) for r in _list(task.get("partOf"))),
    ]
    for param, value in pairs:
        ref = _ref(value)
        if ref:
            rows.append((param, ref, ref.split("/", 1)[1]))
    return list(dict.fromkeys(rows))
