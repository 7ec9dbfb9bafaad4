"""What makes a request body an acceptable Task, and what the server adds to it.

Three layers of checks, cheapest first: the JSON itself (nulls, control characters,
nesting), the FHIR R4 structure (fhir.resources models), then the Canvas rules
(required elements, code systems, reference targets).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any, get_args

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.task import Task as TaskModel
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic import BaseModel, ValidationError

from caretask.domain.errors import InvalidResource, Issue
from caretask.domain.references import split_reference
from caretask.domain.task_fast_check import certainly_valid

GROUP_EXTENSION = "http://schemas.canvasmedical.com/fhir/extensions/task-group"
PERMALINK_EXTENSION = "http://schemas.canvasmedical.com/fhir/extensions/task-permalink"

TASK_STATUS = frozenset(
    [
        "draft",
        "requested",
        "received",
        "accepted",
        "rejected",
        "ready",
        "cancelled",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "entered-in-error",
    ]
)
TASK_INTENT = frozenset(
    [
        "unknown",
        "proposal",
        "plan",
        "order",
        "original-order",
        "reflex-order",
        "filler-order",
        "instance-order",
        "option",
    ]
)
TASK_PRIORITY = frozenset(["routine", "urgent", "asap", "stat"])

MAX_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What the server counts as whitespace: Python's `\s` (str.isspace), spelled out as a
# character class so that the OpenAPI document's patterns can say the same thing: `\s` in
# a JSON Schema pattern is ECMA-262's, which counts U+FEFF and not U+0085 (and a fuzzer
# drawing from Python's ASCII `\s` counts neither U+00A0 nor U+3000).
WHITESPACE = (
    "\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f\\u0020\\u0085\\u00a0\\u1680"
    "\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
)
# FHIR's uri (no whitespace, not empty) and code (words separated by single spaces, as
# FHIR's definition of code says): fhir.resources holds values to neither (its uri pattern
# is unanchored, so it checks nothing, and its code pattern lets any whitespace separate
# words), so the server does, as its fast check (task_fast_check) and OpenAPI document do
_URI_FORM = re.compile(f"[^{WHITESPACE}]+")
_CODE_FORM = re.compile(f"[^{WHITESPACE}]+( [^{WHITESPACE}]+)*")
_FORMS = {"uri": _URI_FORM, "url": _URI_FORM, "canonical": _URI_FORM, "code": _CODE_FORM}
_FORM_TEXT = {
    _URI_FORM: "'{}' must not be empty or hold whitespace (a uri)",
    _CODE_FORM: "'{}' must be words separated by single spaces, without other whitespace (a code)",
}

Path = tuple[str | int, ...]


def fhirpath(path: Path) -> str:
    """('note', 0, 'time') -> 'Task.note[0].time'."""
    out = "Task"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


# --- layer 1: the JSON itself -------------------------------------------------------------


def _json_issues(body: dict[str, Any], max_depth: int = MAX_DEPTH) -> list[Issue]:
    """Walk the JSON iteratively: a 1,000-deep body must not exhaust Python's stack."""
    issues: list[Issue] = []
    stack: list[tuple[Any, Path]] = [(body, ())]
    while stack and len(issues) < 20:
        value, path = stack.pop()
        if len(path) > max_depth:
            issues.append(
                Issue("too-costly", f"nesting deeper than {max_depth} levels", fhirpath(path))
            )
            continue
        if value is None:
            issues.append(Issue("structure", "null is not a valid FHIR JSON value", fhirpath(path)))
        elif isinstance(value, str):
            if _CONTROL.search(value):
                issues.append(
                    Issue("invalid", "strings may not contain control characters", fhirpath(path))
                )
        elif isinstance(value, dict):
            if not value and path:
                issues.append(Issue("structure", "empty objects are not allowed", fhirpath(path)))
            for key, item in value.items():
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            if not value:
                issues.append(Issue("structure", "empty arrays are not allowed", fhirpath(path)))
            for index, item in enumerate(value):
                stack.append((item, (*path, index)))
    issues.reverse()
    return issues


# --- layer 2: FHIR R4 structure ----------------------------------------------------------


def _flatten(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in get_args(annotation):
        yield from _flatten(arg)


@cache
def _complex_elements(model_class: type[BaseModel]) -> dict[str, tuple[bool, type | None]]:
    """JSON name -> (is a list, model class) for the elements that are not primitives."""
    out: dict[str, tuple[bool, type | None]] = {}
    for name, info in model_class.model_fields.items():
        if is_primitive_type(info):
            continue
        child = None
        for arg in _flatten(info.annotation):
            type_name = getattr(arg, "__name__", "")
            if type_name.endswith("Type"):
                try:
                    child = get_fhir_model_class(type_name[:-4])
                except KeyError:
                    child = None
                break
        out[info.alias or name] = (is_list_type(info), child)
    return out


@cache
def elements(model_class: type[BaseModel]) -> dict[str, tuple[bool, type | None]]:
    """JSON name -> (is a list, model class) of every element; the class is None for a
    primitive."""
    out = dict(_complex_elements(model_class))
    for name, info in model_class.model_fields.items():
        out.setdefault(info.alias or name, (is_list_type(info), None))
    return out


_JSON_KIND = {bool: "boolean", int: "number", str: "string"}


@cache
def _primitive_elements(model_class: type[BaseModel]) -> dict[str, tuple[type, str | None]]:
    """JSON name -> the JSON type of a primitive element's value (FHIR JSON writes
    booleans as true/false, integers and decimals as numbers, every other primitive, dates
    and times included, as a string) and the FHIR type whose form _FORMS checks, if any."""
    out: dict[str, tuple[type, str | None]] = {}
    for name, info in model_class.model_fields.items():
        if not is_primitive_type(info):
            continue
        args = list(_flatten(info.annotation))
        kind = bool if bool in args else int if set(args) & {int, float, Decimal} else str
        names = [getattr(arg, "__visit_name__", None) for arg in args]
        fhir_type = next((n for n in names if n in _FORMS), None)
        out[info.alias or name] = (kind, fhir_type)
    if model_class.__name__ == "Reference":
        # a string in FHIR, but a literal reference is a URL (relative or absolute)
        out["reference"] = (str, "uri")
    return out


def _json_type_matches(value: Any, kind: type) -> bool:
    if kind is int:
        return type(value) in (int, float)
    return type(value) is kind


def _shape_issues(raw: dict[str, Any], model_class: type[BaseModel], path: Path) -> Iterator[Issue]:
    """Find elements whose JSON type FHIR JSON does not allow, though the model takes them.

    fhir.resources parses a string holding JSON into a complex type (the seed's update
    example sends `restriction` and `note` that way), and in its lax mode reads a number
    as a dateTime (seconds since 1970) or a string: FHIR JSON allows neither.
    """
    elements = _complex_elements(model_class)
    primitives = _primitive_elements(model_class)
    for key, value in raw.items():
        primitive = primitives.get(key)
        if primitive is not None:
            kind, fhir_type = primitive
            form = _FORMS.get(fhir_type) if fhir_type else None
            values = enumerate(value) if isinstance(value, list) else [(None, value)]
            for index, item in values:
                where = (*path, key) if index is None else (*path, key, index)
                if item is not None and not _json_type_matches(item, kind):
                    text = f"'{key}' must be a JSON {_JSON_KIND[kind]}"
                    yield Issue("structure", text, fhirpath(where))
                elif form is not None and isinstance(item, str) and not form.fullmatch(item):
                    yield Issue("structure", _FORM_TEXT[form].format(key), fhirpath(where))
            continue
        if key not in elements:
            continue
        is_list, child = elements[key]
        here = (*path, key)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            where = here if index is None else (*here, index)
            if isinstance(item, str):
                shape = "an array" if is_list and index is None else "an object"
                yield Issue("structure", f"'{key}' must be {shape}, not a string", fhirpath(where))
            elif isinstance(item, dict) and child is not None:
                yield from _shape_issues(item, child, where)


def _pydantic_issues(error: ValidationError) -> list[Issue]:
    issues = []
    for item in error.errors(include_url=False, include_input=False):
        path = tuple(p for p in item["loc"] if p != "root")
        message = item["msg"].removeprefix("Value error, ")
        kind = "required" if item["type"] == "missing" else "structure"
        if item["type"] == "extra_forbidden":
            message = f"unknown element '{path[-1]}'"
        issues.append(Issue(kind, message, fhirpath(path)))
    return issues


# --- layer 3: the Canvas rules -----------------------------------------------------------


def _reference_issue(value: Any, path: Path, target: str) -> Issue | None:
    if not isinstance(value, dict):
        return None  # structure errors are reported by layer 2
    ref = value.get("reference")
    declared = value.get("type")
    parsed = split_reference(ref) if isinstance(ref, str) else None
    if parsed is None:
        return Issue("invalid", f"must be a reference to {target}/<id>", fhirpath((*path,)))
    if parsed[0] != target or (declared is not None and declared != target):
        return Issue("invalid", f"must reference a {target}, not a {parsed[0]}", fhirpath((*path,)))
    return None


def _canvas_issues(body: dict[str, Any], description: bool = True) -> list[Issue]:
    issues: list[Issue] = []
    for element in ("status", "description", "requester"):
        if element not in body and (description or element != "description"):
            issues.append(Issue("required", f"'{element}' is required", fhirpath((element,))))
    for element, allowed in (
        ("status", TASK_STATUS),
        ("intent", TASK_INTENT),
        ("priority", TASK_PRIORITY),
    ):
        value = body.get(element)
        if isinstance(value, str) and value not in allowed:
            issues.append(
                Issue(
                    "code-invalid",
                    f"'{value}' is not a valid {element} code; expected one of: "
                    + ", ".join(sorted(allowed)),
                    fhirpath((element,)),
                )
            )
    for element, target in (
        ("requester", "Practitioner"),
        ("owner", "Practitioner"),
        ("for", "Patient"),
    ):
        if element in body:
            issue = _reference_issue(body[element], (element,), target)
            if issue:
                issues.append(issue)
    notes, extensions = body.get("note"), body.get("extension")
    for index, note in enumerate(notes if isinstance(notes, list) else []):
        if isinstance(note, dict) and "authorReference" in note:
            issue = _reference_issue(
                note["authorReference"], ("note", index, "authorReference"), "Practitioner"
            )
            if issue:
                issues.append(issue)
    for index, ext in enumerate(extensions if isinstance(extensions, list) else []):
        if isinstance(ext, dict) and ext.get("url") == GROUP_EXTENSION:
            if "valueReference" not in ext:
                issues.append(
                    Issue(
                        "required",
                        "the task-group extension needs a valueReference to a Group",
                        fhirpath(("extension", index, "valueReference")),
                    )
                )
            else:
                issue = _reference_issue(
                    ext["valueReference"], ("extension", index, "valueReference"), "Group"
                )
                if issue:
                    issues.append(issue)
    return issues


# --- entry points ------------------------------------------------------------------------


def validate(body: Any, max_depth: int = MAX_DEPTH, description: bool = True) -> dict[str, Any]:
    """Check a parsed request body; return it (with Canvas defaults) or raise InvalidResource.
    `max_depth` is the JSON nesting allowed (CARETASK_MAX_JSON_DEPTH); `description`
    whether the element is required (profiles.description_required)."""
    if not isinstance(body, dict):
        raise InvalidResource.single("structure", "the body must be a JSON object", "Task")
    if body.get("resourceType") != "Task":
        raise InvalidResource.single("invalid", "resourceType must be 'Task'", "Task.resourceType")
    # the hot path (see task_fast_check): a body it vouches for needs only the Canvas rules
    candidate = body if "intent" in body else {**body, "intent": "unknown"}
    # the fast check vouches for depth only up to MAX_DEPTH: a lower limit takes the slow path
    fast = max_depth >= MAX_DEPTH
    if fast and certainly_valid(candidate) and not _canvas_issues(candidate, description):
        return candidate
    issues = _json_issues(body, max_depth)
    if issues:
        raise InvalidResource(issues)
    if "intent" not in body:
        # Canvas accepts a Task without intent (its create example has none) and stores
        # `unknown`; FHIR requires the element, so the default goes in before validation.
        body = {**body, "intent": "unknown"}
    issues = _canvas_issues(body, description) + list(_shape_issues(body, TaskModel, ()))
    issues += _model_issues(body, TaskModel)
    if issues:
        raise InvalidResource(_dedupe(issues))
    valid: dict[str, Any] = body
    return valid


def structure_issues(
    body: dict[str, Any], model_class: type[BaseModel], max_depth: int = MAX_DEPTH
) -> list[Issue]:
    """What keeps a body from being a FHIR R4 resource of `model_class` (the JSON limits,
    FHIR JSON's types, the model): the checks of validate less the Canvas rules, for the
    other resources the server holds."""
    issues = _json_issues(body, max_depth)
    if issues:
        return issues
    issues = list(_shape_issues(body, model_class, ()))
    return _dedupe(issues + _model_issues(body, model_class))


def _model_issues(body: dict[str, Any], model_class: type[BaseModel]) -> list[Issue]:
    """The model's own verdict. Its validators assume the JSON types the shape check holds
    bodies to, and some raise on another (fhir_core's url validator calls a string method
    on whatever it is given): that is a structure issue of the body, not a server error."""
    try:
        model_class.model_validate(body)
    except ValidationError as error:
        return _pydantic_issues(error)
    except (AttributeError, TypeError):
        return [Issue("structure", "an element's value has the wrong JSON type", None)]
    return []


def _dedupe(issues: list[Issue]) -> list[Issue]:
    """One issue per element: the Canvas rule's wording wins over the model's."""
    seen: set[str | None] = set()
    out = []
    for issue in issues:
        key = issue.expression
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def new_id() -> str:
    return str(uuid.uuid4())


def note_key(note: dict[str, Any]) -> tuple[Any, ...]:
    author = note.get("authorReference")
    return (
        note.get("text"),
        author.get("reference") if isinstance(author, dict) else note.get("authorString"),
    )


def stamp_uses_previous(body: dict[str, Any]) -> bool:
    """Whether stamp() takes anything from `previous` for this body (else the previous
    version changes only versionId): an authoredOn or a note time that the body lacks."""
    notes = body.get("note")
    return "authoredOn" not in body or (
        isinstance(notes, list) and any("time" not in note for note in notes)
    )


def stamp(
    body: dict[str, Any],
    *,
    task_id: str,
    version_id: int,
    now: str,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the resource to store: server-managed fields set, Canvas defaults applied.

    `previous` is the current version on update: its `authoredOn` and the times of notes
    sent again without a time are kept, so that re-sending a note does not re-date it
    (stamp_uses_previous says when that applies: keep the two in step).
    """
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = now
    out: dict[str, Any] = {"resourceType": "Task", "id": task_id, "meta": meta}
    for key, value in body.items():
        if key in ("resourceType", "id", "meta"):
            continue
        out[key] = value
    extensions = [e for e in out.get("extension", []) if e.get("url") != PERMALINK_EXTENSION]
    if extensions:
        out["extension"] = extensions
    else:
        out.pop("extension", None)
    if "authoredOn" not in out:
        out["authoredOn"] = (previous or {}).get("authoredOn", now)
    if "note" in out:
        known = {note_key(n): n["time"] for n in (previous or {}).get("note", []) if "time" in n}
        out["note"] = [
            n if "time" in n else {**n, "time": known.get(note_key(n), now)} for n in out["note"]
        ]
    return out


def restamp(resource: dict[str, Any], now: str) -> dict[str, Any]:
    """A stamped resource with its meta.lastUpdated set to `now` (a copy)."""
    return {**resource, "meta": {**resource["meta"], "lastUpdated": now}}


def tombstone(task_id: str, version_id: int, now: str) -> dict[str, Any]:
    """The version that a delete stores: the task's id and meta and nothing else, so that
    history keeps the deletion's version and time while searches find nothing in it."""
    meta = {"versionId": str(version_id), "lastUpdated": now}
    return {"resourceType": "Task", "id": task_id, "meta": meta}


def is_deleted(resource: dict[str, Any]) -> bool:
    """Whether a stored version is a delete's tombstone: every stored Task has a status
    (validate requires it) except those."""
    return "status" not in resource
