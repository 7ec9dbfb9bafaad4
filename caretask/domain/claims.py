"""Claiming work: the Task operations $claim, $claim-next and $release (FHIR operations
with Parameters bodies). Who may claim for whom, what a claim changes in a Task, and the
search that $claim-next runs; plain functions, no I/O.

A person's token claims for the person (its fhirUser); a system client names the owner.
A claim sets `owner`, a release removes it: each a JSON Patch of the current version, so
that it is validated and stored as any other patch is, a new version that subscriptions
see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from caretask.domain import parameters, search_params
from caretask.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidSearch,
)
from caretask.domain.patch import JSON_PATCH, Patch, read_patch
from caretask.domain.references import split_reference
from caretask.domain.search_params import SearchQuery
from caretask.domain.task_rules import MAX_DEPTH

# the operations' canonical URLs (the CapabilityStatement's definitions)
DEFINITION = "http://caretask.dev/fhir/OperationDefinition/Task-{}"
CLAIM, CLAIM_NEXT, RELEASE = "claim", "claim-next", "release"
OWNER, CRITERIA = "owner", "criteria"
# each operation's parameters and the value[x] each takes
PARAMETERS: dict[str, dict[str, str]] = {
    CLAIM: {OWNER: "valueReference"},
    CLAIM_NEXT: {OWNER: "valueReference", CRITERIA: "valueString"},
    RELEASE: {},
}
# tasks $claim-next looks at per search: the first is nearly always free (claims of one
# search are serialized); the rest cover claims racing in by other searches
CANDIDATES = 10
NOTHING_LEFT = "no unowned task matches"


@dataclass(frozen=True, slots=True)
class Arguments:
    owner: str | None = None  # "Practitioner/<id>"
    criteria: str | None = None


def read_arguments(operation: str, body: Any, max_depth: int = MAX_DEPTH) -> Arguments:
    """An operation's Parameters body (None: no body, no parameters) as its arguments; 400
    for anything else: another resource, an unknown or repeated parameter, a value of
    another type, an owner that is not a Practitioner."""
    if body is None:
        return Arguments()
    body = parameters.checked(body, max_depth)
    allowed = PARAMETERS[operation]
    values: dict[str, Any] = {}
    for index, parameter in enumerate(body.get("parameter", ())):
        name, where = parameter["name"], f"Parameters.parameter[{index}]"
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise InvalidRequest.single(
                "not-supported", f"${operation} has no parameter '{name[:80]}' (it takes: {known})"
            )
        if name in values:
            raise InvalidRequest.single("invalid", f"the parameter '{name}' is repeated", where)
        kind = allowed[name]
        if kind not in parameter:
            raise InvalidRequest.single("invalid", f"'{name}' needs a {kind}", where)
        values[name] = parameter[kind]
    owner = values.get(OWNER)
    if owner is not None:
        owner = _practitioner(owner, f"Parameters.parameter('{OWNER}')")
    return Arguments(owner, values.get(CRITERIA))


def _practitioner(value: dict[str, Any], where: str) -> str:
    reference = value.get("reference")
    parsed = split_reference(reference) if isinstance(reference, str) else None
    if parsed is None or parsed[0] != "Practitioner":
        raise InvalidRequest.single(
            "invalid", "the owner must be a reference to Practitioner/<id>", where
        )
    return f"Practitioner/{parsed[1]}"


def claimant(arguments: Arguments, fhir_user: str | None) -> str:
    """Who a claim is for: the person whose token it is, or the owner a system client names
    (it must name one)."""
    if fhir_user is not None:
        if arguments.owner is not None and arguments.owner != fhir_user:
            raise Forbidden.because(f"a person claims tasks for themself, not {arguments.owner}")
        return fhir_user
    if arguments.owner is None:
        raise InvalidRequest.single(
            "required",
            f"a system client names the new owner: the parameter '{OWNER}' "
            "(valueReference to a Practitioner)",
        )
    return arguments.owner


def owner_of(resource: dict[str, Any]) -> str | None:
    """The task's owner as "Practitioner/<id>", or None when it has none."""
    owner = resource.get("owner")
    reference = owner.get("reference") if isinstance(owner, dict) else None
    parsed = split_reference(reference) if isinstance(reference, str) else None
    return f"{parsed[0]}/{parsed[1]}" if parsed else None


def check_claim(resource: dict[str, Any], task_id: str, owner: str) -> bool:
    """Whether claiming the task for `owner` changes it (False: it is theirs already);
    Conflict when it is someone else's."""
    held = owner_of(resource)
    if held is None:
        return True
    if held == owner:
        return False
    raise Conflict.single("conflict", f"Task/{task_id} is owned by {held}; release it first")


def check_release(resource: dict[str, Any], task_id: str, releaser: str | None) -> bool:
    """Whether releasing the task changes it (False: it has no owner); `releaser` is the
    person asking (None: a system client, which may release any task). Forbidden for a
    person releasing someone else's task."""
    held = owner_of(resource)
    if held is None:
        return False
    if releaser is not None and held != releaser:
        detail = f"Task/{task_id} is owned by {held}: only its owner or a system client releases it"
        raise Forbidden.because(detail)
    return True


def claim_patch(owner: str) -> Patch:
    operation = {"op": "add", "path": "/owner", "value": {"reference": owner}}
    return read_patch([operation], JSON_PATCH)


def release_patch() -> Patch:
    return read_patch([{"op": "remove", "path": "/owner"}], JSON_PATCH)


def claim_query(criteria: str | None) -> tuple[SearchQuery, str]:
    """$claim-next's search: the criteria (any Task search GET /Task accepts, in its
    order) less its paging, for unowned tasks only; and the key that serializes claims of
    the same search. A missing criteria is a 400, as is an unknown parameter."""
    if criteria is None:
        raise InvalidRequest.single(
            "required",
            f"$claim-next needs the parameter '{CRITERIA}' (valueString): a Task search such "
            "as status=requested&_sort=due",
        )
    text = criteria.strip()
    for prefix in ("Task?", "/Task?", "?"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidSearch.single("invalid", "the criteria is not valid UTF-8") from None
    pairs = [(n, v) for n, v in pairs if n not in ("_format", "_pretty")]
    parsed = search_params.parse([*pairs, ("owner:missing", "true")], lenient=False)
    query = search_params.matches_only(parsed, CANDIDATES)
    key = "Task/$claim-next?" + "&".join(sorted(repr(c) for c in parsed.conditions))
    return query, key
