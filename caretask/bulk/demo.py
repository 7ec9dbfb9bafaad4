"""Synthetic tasks with the spread of a real clinic's years of work queues.

Thousands of patients and practitioners, dozens of labels and teams, every status, dates
over five years. Deterministic for a given seed, so benchmarks load the same data.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from caretask.domain.task_rules import GROUP_EXTENSION, TASK_PRIORITY, TASK_STATUS

START = datetime(2021, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 5 * 365 * 86_400
VERBS = [
    "Call", "Ask", "Remind", "Schedule", "Review", "Scan", "Fax", "Order", "Verify", "Refill",
    "Follow up with", "Send", "Update", "Confirm", "Collect",
]  # fmt: skip
OBJECTS = [
    "new insurance information", "lab results", "prior authorization", "referral letter",
    "medication list", "imaging report", "vaccination record", "billing statement",
    "consent form", "care plan", "discharge summary", "blood pressure log", "pharmacy",
    "specialist notes", "appointment reminder", "payment plan", "home health order",
]  # fmt: skip
LABELS = [
    "Urgent", "Billing", "Insurance", "Lab", "Imaging", "Referral", "Pharmacy", "Follow-up",
    "Scheduling", "Records", "Prior auth", "Vaccines", "Chronic care", "Pediatrics",
    "Behavioral health", "Telehealth", "Outreach", "Intake", "Discharge", "Wellness",
    "Diabetes", "Cardiology", "Dermatology", "Orthopedics", "Oncology", "Women's health",
    "Men's health", "Nutrition", "Social work", "Translation", "Transport", "DME",
    "Home health", "Hospice", "Quality", "Compliance", "Audit", "Portal", "Fax", "Mail",
]  # fmt: skip
PRIORITIES = sorted(TASK_PRIORITY)
CODES = ["approve", "fulfill", "abort", "replace", "change", "suspend", "resume"]
CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"


def _hex_ids(rng: random.Random, n: int) -> list[str]:
    return [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(n)]


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def generate(
    count: int,
    *,
    seed: int = 1,
    patients: int | None = None,
    practitioners: int | None = None,
    teams: int = 30,
    statuses: Iterable[str] = TASK_STATUS,
) -> Iterator[dict[str, Any]]:
    """`count` tasks; patients and practitioners scale with count (at least 1,000 / 200);
    `statuses` the ones a profile takes (profiles.statuses), so that an import takes them."""
    rng = random.Random(seed)
    status_codes = sorted(statuses)
    patient_ids = _hex_ids(rng, patients or max(1_000, count // 100))
    practitioner_ids = _hex_ids(rng, practitioners or max(200, count // 1_000))
    team_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(teams)]
    team_names = [f"Team {n + 1}" for n in range(teams)]
    for n in range(count):
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        authored = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
        due = authored + timedelta(days=rng.randrange(1, 60))
        requester = rng.choice(practitioner_ids)
        team = rng.randrange(teams)
        task: dict[str, Any] = {
            "resourceType": "Task",
            "id": task_id,
            "extension": [
                {
                    "url": GROUP_EXTENSION,
                    "valueReference": {
                        "reference": f"Group/{team_ids[team]}",
                        "display": team_names[team],
                    },
                }
            ],
            "identifier": [{"system": "urn:caretask:demo", "value": f"T-{seed}-{n}"}],
            "status": rng.choice(status_codes),
            "intent": "order",
            "priority": rng.choice(PRIORITIES),
            "code": {"coding": [{"system": CODE_SYSTEM, "code": rng.choice(CODES)}]},
            "description": f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} #{n}",
            "for": {"reference": f"Patient/{rng.choice(patient_ids)}"},
            "authoredOn": _instant(authored),
            "requester": {"reference": f"Practitioner/{requester}"},
            "owner": {"reference": f"Practitioner/{rng.choice(practitioner_ids)}"},
            "restriction": {"period": {"end": _instant(due)}},
            "input": [
                {"type": {"text": "label"}, "valueString": label}
                for label in rng.sample(LABELS, rng.choice((0, 1, 1, 2, 3)))
            ],
        }
        if not task["input"]:
            del task["input"]
        if rng.random() < 0.3:
            task["note"] = [
                {
                    "text": f"Note about {rng.choice(OBJECTS)}.",
                    "time": _instant(authored + timedelta(hours=rng.randrange(1, 48))),
                    "authorReference": {"reference": f"Practitioner/{requester}"},
                }
            ]
        yield task
