"""Subscriptions as the HL7 Subscriptions R5 Backport IG (R4 profiles) defines them, on the
one topic this server publishes: a Task was created, changed or deleted.

Checking a Subscription a client sends (structure, topic, filter, channel, payload), the
options its channel asks for, and how the server shows it. Plain functions, no I/O: the
service layer resolves endpoint host names and stores.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir.resources.R4B.subscription import Subscription as SubscriptionModel

from caretask.domain import parameters
from caretask.domain.errors import (
    BusinessRule,
    InvalidRequest,
    InvalidResource,
    InvalidSearch,
    Issue,
)
from caretask.domain.search_params import RESULT_PARAMETERS, parse_filter
from caretask.domain.task_rules import MAX_DEPTH, structure_issues

IG = "http://hl7.org/fhir/uv/subscriptions-backport"
PROFILE = f"{IG}/StructureDefinition/backport-subscription"
FILTER = f"{IG}/StructureDefinition/backport-filter-criteria"
HEARTBEAT = f"{IG}/StructureDefinition/backport-heartbeat-period"
TIMEOUT = f"{IG}/StructureDefinition/backport-timeout"
MAX_COUNT = f"{IG}/StructureDefinition/backport-max-count"
CONTENT = f"{IG}/StructureDefinition/backport-payload-content"
TOPIC_CANONICAL = f"{IG}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
# the one topic: a Task created, changed or deleted, matched on its new and previous version
TOPIC = "http://caretask.dev/fhir/SubscriptionTopic/task-changed"
# the channel's HMAC-SHA256 key: sent by the client at creation, or made by the server and
# shown once, in the create's answer; never stored in the resource, never read back
SECRET = "http://caretask.dev/fhir/StructureDefinition/subscription-signing-secret"

CHANNELS = ("rest-hook", "websocket")
CONTENTS = ("empty", "id-only", "full-resource")
PAYLOADS = ("application/fhir+json", "application/json")
DEFAULT_CONTENT = "id-only"
# a notification carries at most this many events unless the channel asks for fewer
MAX_EVENTS = 100
MIN_SECRET = 16
# headers the server writes itself: a channel header may not replace them
_RESERVED = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection"})
_HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}):[ \t]*([^\r\n\x00]{0,1024})")


@dataclass(frozen=True, slots=True)
class Channel:
    """What a subscription's channel asks for, as delivery needs it."""

    type: str  # rest-hook | websocket
    endpoint: str  # "" for websocket
    payload: str  # the Content-Type of its notifications
    content: str  # empty | id-only | full-resource
    headers: tuple[tuple[str, str], ...]
    heartbeat: int | None  # seconds
    timeout: int | None  # seconds, as asked (the server's limit may be lower)
    max_count: int  # events per notification


@dataclass(frozen=True, slots=True)
class Checked:
    """A Subscription the server may store."""

    resource: dict[str, Any]  # the body less the secret, id and meta
    status: str  # what the client asked for: requested | active | off
    filter: str  # the Task search without "Task?"
    channel: Channel
    secret: str | None  # the client's own secret, if it sent one


def _extensions(element: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in element.get("extension", ()) if isinstance(e, dict) and e.get("url") == url]


def _one_value(element: dict[str, Any], url: str, kinds: Sequence[str]) -> Any:
    found = _extensions(element, url)
    if not found:
        return None
    if len(found) > 1:
        raise BusinessRule.single("invalid", f"the extension {url} may appear once")
    for kind in kinds:
        if kind in found[0]:
            return found[0][kind]
    raise BusinessRule.single("invalid", f"the extension {url} needs a {' or '.join(kinds)}")


def _number(element: dict[str, Any], url: str, low: int, high: int, where: str) -> int | None:
    value = _one_value(element, url, ("valueUnsignedInt", "valuePositiveInt", "valueInteger"))
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise BusinessRule.single(
            "invalid", f"{where} must be a whole number from {low} to {high}", where
        )
    return value


def check(body: Any, max_depth: int = MAX_DEPTH) -> Checked:
    """A Subscription body as the server will store it, or the error that refuses it: a
    400 for what is not a Subscription or a filter no Task search accepts, a 422 for what
    this server does not support (another topic, channel or payload), as the IG asks."""
    if not isinstance(body, dict):
        raise InvalidResource.single("structure", "the body must be a JSON object", "Subscription")
    if body.get("resourceType") != "Subscription":
        raise InvalidResource.single(
            "invalid", "resourceType must be 'Subscription'", "Subscription.resourceType"
        )
    issues = structure_issues(body, SubscriptionModel, max_depth)
    if issues:
        raise InvalidResource([_in_subscription(i) for i in issues])
    status = body["status"]
    if status == "error":
        raise InvalidResource.single(
            "invalid", "'error' is set by the server, not by a client", "Subscription.status"
        )
    if body["criteria"] != TOPIC:
        raise BusinessRule.single(
            "not-supported",
            f"the topic '{body['criteria'][:200]}' is not supported: this server publishes {TOPIC}",
            "Subscription.criteria",
        )
    channel, secret = _channel(body["channel"])
    resource = {k: v for k, v in body.items() if k not in ("id", "meta")}
    resource["channel"] = _without_secret(body["channel"])
    return Checked(resource, status, _filter(body), channel, secret)


def _in_subscription(issue: Issue) -> Issue:
    """An issue of the shared structure checks, in a Subscription's words."""
    expression = (issue.expression or "").replace("Task.", "Subscription.", 1)
    if not expression.startswith("Subscription"):
        expression = f"Subscription.{expression}" if expression else "Subscription"
    code = "required" if issue.text.endswith("is required.") else issue.code
    return Issue(code, issue.text, expression)


def _filter(body: dict[str, Any]) -> str:
    criteria = body.get("_criteria")
    found = _one_value(criteria, FILTER, ("valueString",)) if isinstance(criteria, dict) else None
    if found is None:
        return ""
    text = str(found)
    where = "Subscription.criteria.extension"
    if not text.startswith("Task?"):
        raise InvalidSearch.single("invalid", "a filter is a Task search: 'Task?name=value'", where)
    text = text.removeprefix("Task?")
    names = {name for name, _ in parse_qsl(text, keep_blank_values=True)}
    results = sorted(n for n in names if n in RESULT_PARAMETERS or n.startswith("_include"))
    results += sorted(n for n in names if n.startswith("_revinclude"))
    if results:
        raise InvalidSearch.single(
            "invalid", f"a filter selects tasks; {', '.join(results)} does not", where
        )
    parse_filter(text)  # an unknown parameter or bad value is the search's own 400
    return text


def _channel(channel: dict[str, Any]) -> tuple[Channel, str | None]:
    kind = channel["type"]
    if kind not in CHANNELS:
        raise BusinessRule.single(
            "not-supported",
            f"the channel type '{kind[:40]}' is not supported: {', '.join(CHANNELS)}",
            "Subscription.channel.type",
        )
    endpoint = channel.get("endpoint") or ""
    if kind == "rest-hook" and not endpoint:
        raise BusinessRule.single(
            "required", "a rest-hook channel needs an endpoint", "Subscription.channel.endpoint"
        )
    if kind == "websocket" and endpoint:
        raise BusinessRule.single(
            "invalid",
            "a websocket channel's endpoint is the server's ($get-ws-binding-token): send none",
            "Subscription.channel.endpoint",
        )
    payload = channel.get("payload")
    raw_payload = channel.get("_payload")
    payload_element: dict[str, Any] = raw_payload if isinstance(raw_payload, dict) else {}
    if payload is not None and payload not in PAYLOADS:
        raise BusinessRule.single(
            "not-supported",
            f"the payload type '{payload[:60]}' is not supported: {', '.join(PAYLOADS)}",
            "Subscription.channel.payload",
        )
    content = _one_value(payload_element, CONTENT, ("valueCode",))
    if content is None:
        content = DEFAULT_CONTENT if payload is not None else "empty"
    if content not in CONTENTS:
        raise BusinessRule.single(
            "not-supported",
            f"the payload content '{str(content)[:40]}' is not supported: {', '.join(CONTENTS)}",
            "Subscription.channel.payload.extension",
        )
    where = "Subscription.channel.extension"
    heartbeat = _number(channel, HEARTBEAT, 1, 86_400, where)
    timeout = _number(channel, TIMEOUT, 1, 3600, where)
    max_count = _number(channel, MAX_COUNT, 1, MAX_EVENTS, where) or MAX_EVENTS
    secret = _one_value(channel, SECRET, ("valueString",))
    if secret is not None and (not isinstance(secret, str) or len(secret) < MIN_SECRET):
        raise BusinessRule.single(
            "invalid", f"a signing secret has at least {MIN_SECRET} characters", where
        )
    return (
        Channel(
            kind,
            endpoint,
            payload or PAYLOADS[0],
            content,
            _headers(channel.get("header", ())),
            heartbeat,
            timeout,
            max_count,
        ),
        secret,
    )


def _headers(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    headers = []
    for i, text in enumerate(values):
        where = f"Subscription.channel.header[{i}]"
        match = _HEADER.fullmatch(text)
        if match is None:
            raise BusinessRule.single("invalid", "a header is 'Name: value' on one line", where)
        name, value = match.groups()
        if name.lower() in _RESERVED or name.lower().startswith("x-caretask-"):
            raise BusinessRule.single("invalid", f"the header {name} is the server's to set", where)
        headers.append((name, value.strip()))
    return tuple(headers)


def _without_secret(channel: dict[str, Any]) -> dict[str, Any]:
    kept = [e for e in channel.get("extension", ()) if e.get("url") != SECRET]
    out = {k: v for k, v in channel.items() if k != "extension"}
    if kept:
        out["extension"] = kept
    return out


def channel_of(resource: dict[str, Any]) -> Channel:
    """The channel of a stored (so checked) Subscription."""
    return _channel(resource["channel"])[0]


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def stamp(
    resource: dict[str, Any], subscription_id: str, version_id: int, last_updated: str
) -> dict[str, Any]:
    """The resource as stored: with its id and meta first."""
    meta = {"versionId": str(version_id), "lastUpdated": last_updated, "profile": [PROFILE]}
    return {"resourceType": "Subscription", "id": subscription_id, "meta": meta, **resource}


def shown(resource: dict[str, Any], status: str, error: str | None) -> dict[str, Any]:
    """A stored Subscription as a client reads it: its status the server's, with the last
    delivery failure in `error` while it is in error."""
    out = {**resource, "status": status}
    out.pop("error", None)
    if status == "error" and error:
        out["error"] = error
    return out


def with_secret(resource: dict[str, Any], secret: str) -> dict[str, Any]:
    """The create's answer: the one time the signing secret is shown."""
    channel = dict(resource["channel"])
    channel["extension"] = [
        *channel.get("extension", ()),
        {"url": SECRET, "valueString": secret},
    ]
    return {**resource, "channel": channel}


def status_after_write(
    asked: str,
    channel: Channel,
    previous_status: str | None,
    previous: Channel | None,
    previous_filter: str | None,
    new_filter: str,
) -> str:
    """The status a create or update leaves: "off" when asked; a websocket channel needs no
    handshake (its endpoint is this server); a rest-hook channel that is new, changed, or
    was not active starts over with a handshake ("requested")."""
    if asked == "off":
        return "off"
    if channel.type == "websocket":
        return "active"
    unchanged = previous == channel and previous_filter == new_filter
    if previous_status == "active" and asked == "active" and unchanged:
        return "active"
    return "requested"


# --- endpoints ----------------------------------------------------------------------------


def allowed_by_prefix(url: str, prefixes: Sequence[str]) -> bool:
    """Whether an endpoint starts with one of the operator's allowed URL prefixes."""
    return any(url.startswith(prefix) for prefix in prefixes)


def https_host(url: str) -> str | None:
    """The host of an https:// URL without userinfo, or None."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.hostname


def is_public(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local,
    reserved or the metadata services' 169.254/16)."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_global
    except ValueError:
        return False


def refused_endpoint(url: str, why: str) -> BusinessRule:
    return BusinessRule.single(
        "security", f"the endpoint is not allowed: {why}", "Subscription.channel.endpoint"
    )


# --- searches and operations --------------------------------------------------------------

SEARCH_PARAMETERS = ("url", "status", "_count", "_offset")
# ASCII digits: str.isdigit() is true of '²', which int() refuses
_DIGITS = re.compile(r"[0-9]{1,18}")
DEFAULT_COUNT, MAX_COUNT_PAGE = 50, 500


@dataclass(frozen=True, slots=True)
class SubscriptionSearch:
    url: str | None
    statuses: tuple[str, ...]
    count: int
    offset: int


def _whole(name: str, raw: str, low: int, high: int) -> int:
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise InvalidSearch.single("invalid", f"{name} must be a whole number {low} to {high}")
    return int(raw)


def parse_search(pairs: Sequence[tuple[str, str]]) -> SubscriptionSearch:
    """GET /Subscription's parameters: url (exact), status (a comma is OR), _count, _offset."""
    url, statuses, count, offset = None, [], DEFAULT_COUNT, 0
    for name, raw in pairs:
        if name in ("_format", "_pretty"):
            continue
        if name == "url":
            url = raw
        elif name == "status":
            for value in raw.split(","):
                if value not in ("requested", "active", "error", "off"):
                    raise InvalidSearch.single("invalid", f"status '{value[:20]}' is not one")
                statuses.append(value)
        elif name == "_count":
            count = _whole(name, raw, 0, MAX_COUNT_PAGE)
        elif name == "_offset":
            offset = _whole(name, raw, 0, 1_000_000)
        else:
            raise InvalidSearch.single(
                "not-supported",
                f"unknown search parameter '{name[:40]}' for Subscription: "
                f"{', '.join(SEARCH_PARAMETERS)}",
            )
    return SubscriptionSearch(url, tuple(dict.fromkeys(statuses)), count, offset)


@dataclass(frozen=True, slots=True)
class EventRange:
    since: int  # the first event number (inclusive)
    until: int | None  # the last (inclusive)
    content: str | None


def parse_events(pairs: Sequence[tuple[str, str]]) -> EventRange:
    """$events' parameters: eventsSinceNumber, eventsUntilNumber (both inclusive), content."""
    since, until, content = 1, None, None
    for name, raw in pairs:
        if name in ("_format", "_pretty"):
            continue
        if name == "eventsSinceNumber":
            since = _number_parameter(name, raw)
        elif name == "eventsUntilNumber":
            until = _number_parameter(name, raw)
        elif name == "content":
            if raw not in CONTENTS:
                raise InvalidRequest.single("invalid", f"content is one of {', '.join(CONTENTS)}")
            content = raw
        else:
            raise InvalidRequest.single("not-supported", f"$events has no parameter '{name[:40]}'")
    return EventRange(max(since, 1), until, content)


def _number_parameter(name: str, raw: str) -> int:
    if not _DIGITS.fullmatch(raw):
        raise InvalidRequest.single("invalid", f"{name} must be an event number")
    return int(raw)


def operation_pairs(body: Any, max_depth: int = MAX_DEPTH) -> list[tuple[str, str]]:
    """A POSTed Parameters body's (name, value) pairs, values of primitive types as text;
    400 for a body that is no FHIR Parameters resource."""
    body = parameters.checked(body, max_depth)
    pairs = []
    for parameter in body.get("parameter", ()):
        for key, value in parameter.items():
            if key.startswith("value") and isinstance(value, str | int) and value is not True:
                pairs.append((parameter["name"], str(value)))
    return pairs
