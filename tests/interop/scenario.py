"""What every client's scenario shares: a running server in one profile with an OAuth
client of its own, the tasks the scenarios create, and the Node.js clients' runner."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.log_scan import remember
from tests.support.node import NODE_DIR, run_node
from tests.support.seed import label_input, seed_task
from tests.support.server import Server

# every profile a client can be tested in; canvas clients ask for the stored Task
# themselves, as the canvas profile (like Canvas) answers create and update with no body
PROFILES = ["fhir", "canvas"]
REPRESENTATION = {"Prefer": "return=representation"}
# more than three pages of the default ten, so that paging follows several next links
PAGED_TASKS = 37
PAGE_SIZE = 10
# seconds any one request of a client may take: a server that stops answering fails the
# test that waits on it instead of hanging the run
REQUEST_TIMEOUT = 30


@dataclass
class Interop:
    """A `caretask serve` in one profile, and the OAuth client the scenarios log in as."""

    server: Server
    profile: str
    client_id: str
    client_secret: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def headers(self) -> dict[str, str]:
        """The headers a client sends on every request in this profile."""
        return REPRESENTATION if self.profile == "canvas" else {}

    def token(self) -> str:
        response = httpx.post(
            f"{self.url}/auth/token/",
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            },
            timeout=REQUEST_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        remember(token)
        return token

    def seed(self, body: dict[str, Any]) -> str:
        """Store a task over plain HTTP (setup, not the client under test); its id."""
        with self.server.client(self.token()) as api:
            response = api.post("/Task", json=body)
        assert response.status_code == 201, response.text
        return response.headers["location"].rsplit("/", 1)[1]

    def seed_many(self, bodies: list[dict[str, Any]]) -> list[str]:
        with self.server.client(self.token()) as api:
            ids = []
            for body in bodies:
                response = api.post("/Task", json=body)
                assert response.status_code == 201, response.text
                ids.append(response.headers["location"].rsplit("/", 1)[1])
        return ids


@dataclass
class DistinctTask:
    """A task whose every seed search value no other test uses, and those values."""

    body: dict[str, Any]
    patient: str
    owner: str
    requester: str
    label: str
    description: str

    def query(self, parameter: str, task_id: str) -> dict[str, str]:
        """The search that finds exactly this task by one seed parameter."""
        values = {
            "_id": task_id,
            "label": self.label,
            "owner": f"Practitioner/{self.owner}",
            "description": self.description,
            "patient": f"Patient/{self.patient}",
            "requester": f"Practitioner/{self.requester}",
        }
        return {parameter: values[parameter]}


SEED_PARAMETERS = ["_id", "label", "owner", "description", "patient", "requester"]


def distinct_task() -> DistinctTask:
    mark = uuid.uuid4().hex
    patient, owner, requester = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    label = f"label-{mark}"
    description = f"Interop {mark}"
    body = seed_task(
        for_={"reference": f"Patient/{patient}"},
        owner={"reference": f"Practitioner/{owner}"},
        requester={"reference": f"Practitioner/{requester}"},
        description=f"{description}: ask the patient for new insurance information.",
        input=label_input(label),
        # R4 requires intent (the seed's body leaves it to the server); generic clients'
        # models refuse a Task without it
        intent="unknown",
    )
    # the note's author is the seed's requester; keep it a Practitioner of this task
    body["note"][0]["authorReference"] = {"reference": f"Practitioner/{requester}"}
    return DistinctTask(body, patient, owner, requester, label, description)


def patient_tasks(patient: str, count: int) -> list[dict[str, Any]]:
    """`count` tasks for one patient, in creation order."""
    return [
        seed_task(for_={"reference": f"Patient/{patient}"}, description=f"Paged task {n}")
        for n in range(count)
    ]


def tail(output: str, lines: int = 30, width: int = 300) -> str:
    """The end of a process's output, each line cut short: a Node.js stack trace quotes
    whole lines of minified library code, which would bury the message."""
    return "\n".join(line[:width] for line in output.splitlines()[-lines:])


def node_client(script: str, interop: Interop, action: str, **payload: Any) -> dict[str, Any]:
    """Run one step of a Node.js client's scenario (tests/node/<script>) and return its
    result; a client that threw fails the test with the client's own message."""
    result = run_node(
        (NODE_DIR / script).read_text(),
        {
            "action": action,
            "baseUrl": interop.url,
            "clientId": interop.client_id,
            "clientSecret": interop.client_secret,
            "headers": interop.headers or None,
            **payload,
        },
        timeout=120,
    )
    assert isinstance(result, dict), result
    if "error" in result:
        raise AssertionError(f"{script} {action} ({interop.profile} profile): {result}")
    return result
