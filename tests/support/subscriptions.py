"""Subscriptions as tests write them: the IG's extension URLs, a Subscription body, and a
server whose allowlist lets it notify receivers on loopback."""

from __future__ import annotations

from typing import Any

import httpx

IG = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC = "http://caretask.dev/fhir/SubscriptionTopic/task-changed"
SECRET_URL = "http://caretask.dev/fhir/StructureDefinition/subscription-signing-secret"
SCOPE = "system/Task.* system/Subscription.*"
# the server setting that lets subscriptions notify receivers on loopback, and delivery
# settings that keep the tests short
LOOPBACK = {
    "CARETASK_SUBSCRIPTION_ENDPOINTS": "http://127.0.0.1:",
    "CARETASK_SUBSCRIPTION_POLL_SECONDS": "0.2",
    "CARETASK_SUBSCRIPTION_TIMEOUT": "2",
}


def subscription_body(
    endpoint: str | None,
    search: str | None = None,
    content: str = "id-only",
    channel: str = "rest-hook",
    heartbeat: int | None = None,
    max_count: int | None = None,
    headers: tuple[str, ...] = (),
    status: str = "requested",
) -> dict[str, Any]:
    channel_element: dict[str, Any] = {
        "type": channel,
        "payload": "application/fhir+json",
        "_payload": {
            "extension": [{"url": f"{IG}/backport-payload-content", "valueCode": content}]
        },
    }
    if endpoint is not None:
        channel_element["endpoint"] = endpoint
    extensions = []
    if heartbeat is not None:
        extensions.append({"url": f"{IG}/backport-heartbeat-period", "valueUnsignedInt": heartbeat})
    if max_count is not None:
        extensions.append({"url": f"{IG}/backport-max-count", "valuePositiveInt": max_count})
    if extensions:
        channel_element["extension"] = extensions
    if headers:
        channel_element["header"] = list(headers)
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": status,
        "reason": "tests",
        "criteria": TOPIC,
        "channel": channel_element,
    }
    if search is not None:
        body["_criteria"] = {
            "extension": [
                {"url": f"{IG}/backport-filter-criteria", "valueString": f"Task?{search}"}
            ]
        }
    return body


def secret_of(created: dict[str, Any]) -> str:
    """The signing secret a create's answer shows."""
    return next(e["valueString"] for e in created["channel"]["extension"] if e["url"] == SECRET_URL)


def focus_of(received_json: dict[str, Any]) -> list[str]:
    """The focus references of a notification's events, in order."""
    status = received_json["entry"][0]["resource"]
    out = []
    for parameter in status["parameter"]:
        if parameter["name"] == "notification-event":
            for part in parameter["part"]:
                if part["name"] == "focus":
                    out.append(part["valueReference"]["reference"])
    return out


def events_since_start(client: httpx.Client, subscription_id: str) -> int:
    """The subscription's events-since-subscription-start, from $status."""
    answer = client.get(f"/Subscription/{subscription_id}/$status")
    assert answer.status_code == 200, answer.text
    status = answer.json()["entry"][0]["resource"]
    return next(
        int(p["valueString"])
        for p in status["parameter"]
        if p["name"] == "events-since-subscription-start"
    )
