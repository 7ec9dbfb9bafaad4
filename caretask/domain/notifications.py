"""Notification Bundles of the Subscriptions Backport IG, R4 profiles: a `history` Bundle
whose first entry is the SubscriptionStatus (a Parameters resource), then one entry per
event; the $status searchset; and the signature of a rest-hook POST. Plain functions."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from caretask.domain.subscriptions import TOPIC

STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)
NOTIFICATION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-notification-r4"
)
SIGNATURE_HEADER = "X-Caretask-Signature"
# an event's kind as a history entry's request and response
_REQUEST = {"create": ("POST", "201"), "update": ("PUT", "200"), "delete": ("DELETE", "204")}


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a notification shows it."""

    number: int
    task_id: str
    version_id: int
    kind: str  # create | update | delete
    timestamp: str  # the instant of the task version that triggered it
    resource: dict[str, Any] | None  # that version, for full-resource content


def status_parameters(
    subscription_id: str,
    status: str,
    kind: str,
    events_since_start: int,
    events: Sequence[Event],
    content: str,
    error: str | None = None,
) -> dict[str, Any]:
    """The SubscriptionStatus of a notification (`kind`: handshake, heartbeat,
    event-notification, query-status, query-event)."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"Subscription/{subscription_id}"}}
    ]
    if content != "empty":
        parameters.append({"name": "topic", "valueCanonical": TOPIC})
    parameters += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": event.timestamp},
        ]
        if content != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": _focus(event)}})
        parameters.append({"name": "notification-event", "part": parts})
    if error:
        parameters.append(
            {
                "name": "error",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/subscription-error",
                            "code": "no-response",
                        }
                    ],
                    "text": error,
                },
            }
        )
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def _focus(event: Event) -> str:
    return f"Task/{event.task_id}/_history/{event.version_id}"


def notification(
    base: str,
    subscription_id: str,
    status: str,
    kind: str,
    events_since_start: int,
    events: Sequence[Event],
    content: str,
    now: str,
    error: str | None = None,
) -> dict[str, Any]:
    """A notification Bundle: handshake, heartbeat, event-notification, or query-event (the
    answer to $events)."""
    parameters = status_parameters(
        subscription_id, status, kind, events_since_start, events, content, error
    )
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{parameters['id']}",
            "resource": parameters,
            "request": {"method": "GET", "url": f"{base}/Subscription/{subscription_id}/$status"},
            "response": {"status": "200"},
        }
    ]
    if content != "empty":
        entries += [event_entry(base, event, content) for event in events]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": now,
        "entry": entries,
    }


def event_entry(base: str, event: Event, content: str) -> dict[str, Any]:
    """An event's history entry: what happened to which version of the task, and with
    full-resource content that version (a deletion has none)."""
    method, status = _REQUEST[event.kind]
    url = "Task" if event.kind == "create" else f"Task/{event.task_id}"
    entry: dict[str, Any] = {"fullUrl": f"{base}/Task/{event.task_id}"}
    if content == "full-resource" and event.resource is not None and event.kind != "delete":
        entry["resource"] = event.resource
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {
        "status": status,
        "etag": f'W/"{event.version_id}"',
        "lastModified": event.timestamp,
    }
    return entry


def status_searchset(base: str, statuses: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """$status's answer: one SubscriptionStatus per Subscription."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(statuses),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{status['id']}",
                "resource": status,
                "search": {"mode": "match"},
            }
            for status in statuses
        ],
    }


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
    so that a receiver can tell the body came from this server and is not a replay of an
    old one."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does with the header: recompute and compare in constant time."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if not re.fullmatch(r"[0-9]{1,12}", fields.get("t", "")) or "v1" not in fields:
        return False
    expected = signature(secret, body, int(fields["t"]))
    return hmac.compare_digest(expected, f"t={fields['t']},v1={fields['v1']}")
