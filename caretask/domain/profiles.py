"""The two profiles a server runs in: `canvas` (what Canvas documents) and `fhir` (what
generic FHIR clients expect). They differ only where the two conflict; each difference is
a function here, taking the profile, so that every entry point (the HTTP API, an import)
follows the same one."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from caretask.domain.errors import Issue
from caretask.domain.references import split_reference
from caretask.domain.task_rules import GROUP_EXTENSION, TASK_STATUS, note_key

Profile = Literal["canvas", "fhir"]
CANVAS: Profile = "canvas"
FHIR: Profile = "fhir"
PROFILES: tuple[Profile, ...] = (CANVAS, FHIR)
DEFAULT: Profile = CANVAS

# the statuses Canvas supports; every other R4 code is a business-rule refusal there
CANVAS_STATUS = frozenset(["requested", "cancelled", "completed"])
# what each profile writes in CapabilityStatement.implementation.description and the
# OpenAPI document's info.description, so that a client can tell which one runs
DESCRIPTION = {
    CANVAS: "caretask FHIR Task server, profile canvas (Canvas Medical's documented behaviour)",
    FHIR: "caretask FHIR Task server, profile fhir (FHIR R4 REST conventions)",
}


def profile(text: str) -> Profile:
    """A profile's name as its value; ValueError for another."""
    for known in PROFILES:
        if text == known:
            return known
    raise ValueError(f"'{text}' is not a profile; expected one of: {', '.join(PROFILES)}")


def statuses(profile: Profile) -> frozenset[str]:
    """The task-status codes a Task may be written with."""
    return CANVAS_STATUS if profile == CANVAS else TASK_STATUS


def status_issue(body: dict[str, Any], profile: Profile) -> Issue | None:
    """A valid R4 status that the profile does not support (a 422, not a 400: the code is
    right, the server will not take it)."""
    status = body.get("status")
    if profile != CANVAS or status not in TASK_STATUS or status in CANVAS_STATUS:
        return None
    allowed = ", ".join(sorted(CANVAS_STATUS))
    text = f"status '{status}' is not supported; expected one of: {allowed}"
    return Issue("business-rule", text, "Task.status")


def description_required(profile: Profile, update: bool) -> bool:
    """Canvas requires a description only on create (an update without one clears it)."""
    return not update or profile == FHIR


def carry_over(body: dict[str, Any], previous: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """An update's body with what the profile keeps from the stored version `previous`.

    canvas: every note sent is added to the stored ones (a note that is already stored,
    sent again, is not added twice: a retried PUT must not double it), and the task-group
    extension is kept when the body has none. fhir: the body replaces everything.
    authoredOn is kept in both (task_rules.stamp).
    """
    if profile != CANVAS:
        return body
    out = dict(body)
    stored_notes = previous.get("note", [])
    sent = body.get("note", [])
    if stored_notes:
        known = {(note_key(n), n.get("time")) for n in stored_notes}
        keys = {note_key(n) for n in stored_notes}

        def stored(note: dict[str, Any]) -> bool:
            # a note without its time, sent again, is the stored one (stamp keeps its time)
            if "time" in note:
                return (note_key(note), note["time"]) in known
            return note_key(note) in keys

        added = [n for n in sent if not stored(n)]
        out["note"] = [*stored_notes, *added]
    if not any(e.get("url") == GROUP_EXTENSION for e in body.get("extension", [])):
        groups = [e for e in previous.get("extension", []) if e.get("url") == GROUP_EXTENSION]
        if groups:
            out["extension"] = [*body.get("extension", []), *groups]
    return out


def uses_previous(body: dict[str, Any], profile: Profile) -> bool:
    """Whether carry_over takes anything from the stored version for this body."""
    if profile != CANVAS:
        return False
    has_group = any(e.get("url") == GROUP_EXTENSION for e in body.get("extension", []))
    return "note" in body or not has_group


# where a returned Task holds references Canvas types, and the type each must have
_TYPED = ("for", "requester", "owner")


def _typed(reference: Any) -> Any:
    if not isinstance(reference, dict) or "type" in reference:
        return reference
    ref = reference.get("reference")
    kind = _canvas_type(ref) if isinstance(ref, str) else None
    return reference if kind is None else {**reference, "type": kind}


@lru_cache(maxsize=4096)  # every Task shown reads its references' types again
def _canvas_type(reference: str) -> str | None:
    parsed = split_reference(reference)
    return parsed[0] if parsed and parsed[0] in ("Patient", "Practitioner", "Group") else None


def shown(resource: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """A stored Task as the profile returns it: in canvas its references carry their
    `type`, as Canvas returns them; in fhir it is as stored."""
    if profile != CANVAS:
        return resource
    out = dict(resource)
    for element in _TYPED:
        if element in out:
            out[element] = _typed(out[element])
    if "note" in out:
        out["note"] = [
            {**n, "authorReference": _typed(n["authorReference"])} if "authorReference" in n else n
            for n in out["note"]
        ]
    if "extension" in out:
        out["extension"] = [
            {**e, "valueReference": _typed(e["valueReference"])}
            if e.get("url") == GROUP_EXTENSION and "valueReference" in e
            else e
            for e in out["extension"]
        ]
    return out
