"""The audit trail's records: what a request was, with its search values redacted, and
the FHIR AuditEvent an exported record becomes, and the batches storage keeps them in.
Plain functions, no I/O.

A record holds who (the client id a valid token named, or the client id a token request
claimed, and for a person's token or sign-in their username and fhirUser), what (the FHIR
interaction, the task id and version addressed, the search parameter names), when, from
where (the peer address) and the HTTP status. It never holds a search value, a body or a
header: those carry PHI and secrets.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import unquote

import orjson

# result parameters whose values are counts, element names or fixed codes, never PHI
KEPT_VALUES = frozenset(
    {"_count", "_offset", "_sort", "_total", "_summary", "_include", "_revinclude",
     "_elements", "_format", "_pretty"}
)  # fmt: skip
REDACTED = "*"
# NUL and other control characters, which a client may send in a name: PostgreSQL's jsonb
# refuses \u0000, and a refused batch would hold up every record after it
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean(text: str) -> str:
    return _CONTROL.sub("?", text)


MAX_QUERY_CHARS = 1000
MAX_NAME_CHARS = 64


class AuditRecord(NamedTuple):
    """A tuple, not a dataclass: one is made per request, and a tuple is several times
    cheaper to build than a frozen dataclass; its fields but event_id (FIELDS) are what is
    stored (batches stored before people signed in hold the first nine)."""

    recorded: int  # microseconds since the epoch
    client_id: str | None
    interaction: str
    method: str
    resource_id: str | None
    version_id: int | None
    query: str | None
    address: str | None
    status: int
    user: str | None = None  # a person's username (their token's, or a sign-in's)
    fhir_user: str | None = None  # and the FHIR resource that is them: Practitioner/<id>
    event_id: str | None = None  # "<batch>-<index>" once stored


def redact_names(names: list[str]) -> str | None:
    """`name=*` for each search parameter, in the order sent; counts and codes of the
    result parameters kept (`_count=10`)."""
    parts: list[str] = []
    size = 0
    for raw in names:
        name, _, value = raw.partition("=")
        name = clean(name[:MAX_NAME_CHARS])
        value = clean(value[:MAX_NAME_CHARS]) if name in KEPT_VALUES else REDACTED
        part = f"{name}={value}"
        size += len(part) + 1
        if size > MAX_QUERY_CHARS:
            parts.append("…")
            break
        parts.append(part)
    return "&".join(parts) or None


def redact_query(query_string: str) -> str | None:
    """The redacted form of a raw query string (percent-decoded names)."""
    pairs = []
    for item in query_string.split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs.append(f"{_decode(name)}={_decode(value)}")
    return redact_names(pairs)


def redact_pairs(pairs: list[tuple[str, str]]) -> str | None:
    return redact_names([f"{name}={value}" for name, value in pairs])


def _decode(text: str) -> str:
    return unquote(text.replace("+", " "), errors="replace")


FIELDS = AuditRecord._fields[:-1]


class Batch(NamedTuple):
    """What storage keeps for a batch of records (migration 0006)."""

    first_recorded: int
    last_recorded: int
    clients: str  # the client ids named, one per line
    records: str  # a JSON array of arrays, fields in the order of FIELDS


def encode_batch(records: Sequence[AuditRecord]) -> Batch:
    times = [r.recorded for r in records]
    clients = sorted({r.client_id for r in records if r.client_id is not None})
    stored = len(FIELDS)
    payload = orjson.dumps([r[:stored] for r in records]).decode()
    return Batch(min(times), max(times), "\n".join(clients), payload)


def decode_batch(seq: int, records: str | bytes) -> list[AuditRecord]:
    missing = [None] * len(FIELDS)  # what older batches did not store: None
    return [
        AuditRecord._make([*fields, *missing[len(fields) :], f"{seq}-{index}"])
        for index, fields in enumerate(orjson.loads(records))
    ]


def select(
    batches: Iterable[tuple[int, str | bytes]],
    client_id: str | None,
    since: int | None,
    user: str | None = None,
) -> Iterator[AuditRecord]:
    """The records of stored batches that match, in the order they were stored."""
    for seq, payload in batches:
        for record in decode_batch(seq, payload):
            if client_id is not None and record.client_id != client_id:
                continue
            if user is not None and record.user != user:
                continue
            if since is not None and record.recorded < since:
                continue
            yield record


def format_instant(micros: int) -> str:
    moment = datetime.fromtimestamp(micros / 1e6, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def text_line(record: AuditRecord) -> str:
    """One tab-separated line: when, who, from where, what, outcome."""
    target = "-"
    if record.resource_id is not None:
        target = f"Task/{record.resource_id}"
        if record.version_id is not None:
            target += f"/_history/{record.version_id}"
    who = record.client_id or "-"
    if record.user is not None:  # a person, in the app: "caretask-board alice Practitioner/1"
        who = f"{who} {record.user} {record.fhir_user or '-'}"
    return "\t".join(
        [
            format_instant(record.recorded),
            who,
            record.address or "-",
            record.method,
            record.interaction,
            target,
            record.query or "-",
            str(record.status),
        ]
    )


_REST = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
_LOGIN_TYPE = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110114",
    "display": "User Authentication",
}
_LOGIN_SUBTYPE = {
    "system": "http://dicom.nema.org/resources/ontology/DCM",
    "code": "110122",
    "display": "Login",
}
_ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "search-type": "E",
    "capabilities": "E",
    "update": "U",
    "patch": "U",
    "delete": "D",
}
_SOURCE = {
    "observer": {"display": "caretask"},
    "type": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
            "code": "3",
            "display": "Web Server",
        }
    ],
}


def _outcome(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (refused), 8 serious (our fault)."""
    return "0" if status < 400 else "4" if status < 500 else "8"


def audit_event(record: AuditRecord) -> dict[str, Any]:
    """The FHIR R4 AuditEvent for one record."""
    login = record.interaction == "login"
    agent: dict[str, Any] = {"requestor": True}
    if record.client_id is not None:
        agent["who"] = {
            "identifier": {"system": "urn:caretask:client-id", "value": record.client_id}
        }
    else:
        agent["name"] = "unauthenticated"
    agents = [agent]
    if record.user is not None:  # the person is the requestor, through the app
        person: dict[str, Any] = {"altId": record.user, "requestor": True}
        if record.fhir_user is not None:
            person["who"] = {"reference": record.fhir_user}
        agent["requestor"] = False
        agents = [person, agent]
    if record.address:
        agents[0]["network"] = {"address": record.address, "type": "2"}
    event: dict[str, Any] = {"resourceType": "AuditEvent"}
    if record.event_id is not None:
        event["id"] = record.event_id
    event |= {
        "type": _LOGIN_TYPE if login else _REST,
        "action": _ACTIONS.get(record.interaction, "E"),
        "recorded": format_instant(record.recorded),
        "outcome": _outcome(record.status),
        "outcomeDesc": f"{record.method} answered HTTP {record.status}",
        "agent": agents,
        "source": _SOURCE,
    }
    if login:
        event["subtype"] = [_LOGIN_SUBTYPE]
    elif record.interaction != "unknown":
        event["subtype"] = [
            {"system": "http://hl7.org/fhir/restful-interaction", "code": record.interaction}
        ]
    entity: dict[str, Any] = {}
    if record.resource_id is not None:
        reference = f"Task/{record.resource_id}"
        if record.version_id is not None:
            reference += f"/_history/{record.version_id}"
        entity["what"] = {"reference": reference}
    if record.query:
        entity["query"] = base64.b64encode(record.query.encode()).decode()
    if entity:
        entity["type"] = {
            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
            "code": "2",
            "display": "System Object",
        }
        event["entity"] = [entity]
    return event
