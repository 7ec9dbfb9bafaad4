"""The Canvas documentation's example Task, the body most tests create and vary."""

from __future__ import annotations

import copy
import uuid
from typing import Any

SEED_CREATE: dict[str, Any] = {
    "resourceType": "Task",
    "extension": [
        {
            "url": "http://schemas.canvasmedical.com/fhir/extensions/task-group",
            "valueReference": {
                "reference": "Group/9bf1d726-8c04-4aed-8b0e-e066f4d54b13",
                "display": "All Responsibilities",
            },
        }
    ],
    "status": "requested",
    "requester": {"reference": "Practitioner/5eede137ecfe4124b8b773040e33be14"},
    "description": "Ask patient for new insurance information.",
    "for": {"reference": "Patient/5350cd20de8a470aa570a852859ac87e"},
    "owner": {"reference": "Practitioner/3640cd20de8a470aa570a852859ac87e"},
    "authoredOn": "2022-03-20T14:00:00.000Z",
    "restriction": {"period": {"end": "2022-08-01T04:00:00+00:00"}},
    "note": [
        {
            "text": "Please be sure to scan them in at their next visit.",
            "time": "2022-03-20T14:00:00.000Z",
            "authorReference": {"reference": "Practitioner/5eede137ecfe4124b8b773040e33be14"},
        }
    ],
    "input": [{"type": {"text": "label"}, "valueString": "Urgent"}],
}


def seed_task(**changes: Any) -> dict[str, Any]:
    """The seed's create body, with top-level elements replaced (None removes one)."""
    body = copy.deepcopy(SEED_CREATE)
    for key, value in changes.items():
        key = "for" if key == "for_" else key
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def new_patient() -> str:
    """A patient id no other test uses, so that searches see only this test's tasks."""
    return uuid.uuid4().hex


def label_input(text: str) -> list[dict[str, Any]]:
    """Task.input holding one Canvas label."""
    return [{"type": {"text": "label"}, "valueString": text}]
