"""SPEC 12, issue 17: claiming work, on both engines. `POST /Task/<id>/$claim` makes a task
the caller's if it has no owner (a system client names the owner in a Parameters body);
`POST /Task/$claim-next` claims the first unowned task a search finds, in its order;
`POST /Task/<id>/$release` gives a task back. Each answers 200 with the Task (ETag,
Location of the version) and each change is a new version; a claim of someone else's task
is a 409 naming the owner, and nothing left to claim a 404."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support.people import create_user, person_token
from tests.support.seed import new_patient, seed_task
from tests.support.server import Server

ALICE = "Practitioner/alice" + uuid.uuid4().hex[:8]
BOB = "Practitioner/bob" + uuid.uuid4().hex[:8]


def owner(reference: str) -> dict[str, Any]:
    return {"name": "owner", "valueReference": {"reference": reference}}


def parameters(*items: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Parameters"}
    if items:  # FHIR JSON has no empty arrays
        body["parameter"] = list(items)
    return body


def criteria(text: str) -> dict[str, Any]:
    return {"name": "criteria", "valueString": text}


def make_task(api: httpx.Client, **changes: Any) -> dict[str, Any]:
    body = seed_task(**{"owner": None, **changes})
    response = api.post("/Task", json=body, headers={"Prefer": "return=representation"})
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def due(day: int) -> dict[str, Any]:
    return {"period": {"end": f"2030-01-{day:02d}T00:00:00+00:00"}}


def test_claim_makes_an_unowned_task_the_named_owners(api: httpx.Client, server: Server) -> None:
    task = make_task(api)
    response = api.post(f"/Task/{task['id']}/$claim", json=parameters(owner(ALICE)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"] == f"{server.url}/Task/{task['id']}/_history/2"
    body = response.json()
    assert body["owner"]["reference"] == ALICE
    assert body["meta"]["versionId"] == "2"
    assert body["description"] == task["description"]


def test_claim_of_a_task_already_the_callers_changes_nothing(api: httpx.Client) -> None:
    task = make_task(api, owner={"reference": ALICE})
    response = api.post(f"/Task/{task['id']}/$claim", json=parameters(owner(ALICE)))
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"1"'


def test_claim_of_someone_elses_task_is_a_409_naming_the_owner(api: httpx.Client) -> None:
    task = make_task(api, owner={"reference": BOB})
    response = api.post(f"/Task/{task['id']}/$claim", json=parameters(owner(ALICE)))
    assert response.status_code == 409, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "conflict"
    assert BOB in issue["details"]["text"]
    assert api.get(f"/Task/{task['id']}").json()["owner"]["reference"] == BOB


def test_a_system_client_must_name_the_owner(api: httpx.Client) -> None:
    task = make_task(api)
    response = api.post(f"/Task/{task['id']}/$claim")
    assert response.status_code == 400, response.text
    assert "owner" in response.json()["issue"][0]["details"]["text"]


@pytest.mark.parametrize(
    "body",
    [
        parameters({"name": "owner", "valueReference": {"reference": "Patient/1"}}),
        parameters({"name": "owner", "valueString": "Practitioner/1"}),
        parameters(owner(ALICE), owner(BOB)),
        parameters(owner(ALICE), {"name": "colour", "valueString": "red"}),
        {"resourceType": "Task"},
        [1, 2],
    ],
    ids=["patient-owner", "string-owner", "owner-twice", "unknown-parameter", "a-task", "array"],
)
def test_a_malformed_claim_is_a_400(api: httpx.Client, body: Any) -> None:
    task = make_task(api)
    response = api.post(f"/Task/{task['id']}/$claim", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "owner" not in api.get(f"/Task/{task['id']}").json()


def test_claim_parameters_in_the_query_string_are_a_400(api: httpx.Client) -> None:
    task = make_task(api)
    response = api.post(f"/Task/{task['id']}/$claim?owner={ALICE}")
    assert response.status_code == 400, response.text
    assert "Parameters body" in response.json()["issue"][0]["details"]["text"]


def test_claim_of_an_unknown_task_is_a_404(api: httpx.Client) -> None:
    response = api.post("/Task/nosuchtask/$claim", json=parameters(owner(ALICE)))
    assert response.status_code == 404, response.text
    assert response.json()["issue"][0]["code"] == "not-found"


def test_claim_of_a_deleted_task_is_a_410(api: httpx.Client) -> None:
    task = make_task(api)
    assert api.delete(f"/Task/{task['id']}").status_code == 204
    response = api.post(f"/Task/{task['id']}/$claim", json=parameters(owner(ALICE)))
    assert response.status_code == 410, response.text


def test_release_removes_the_owner_in_a_new_version(api: httpx.Client) -> None:
    task = make_task(api, owner={"reference": BOB})
    response = api.post(f"/Task/{task['id']}/$release")
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    assert "owner" not in response.json()
    versions = api.get(f"/Task/{task['id']}/_history").json()["entry"]
    owners = [v["resource"].get("owner", {}).get("reference") for v in versions]
    assert owners == [None, BOB]


def test_release_of_an_unowned_task_changes_nothing(api: httpx.Client) -> None:
    task = make_task(api)
    response = api.post(f"/Task/{task['id']}/$release", json=parameters())
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"1"'


def test_claim_next_claims_the_first_unowned_match_in_the_searchs_order(
    api: httpx.Client, server: Server
) -> None:
    patient = new_patient()
    subject = {"reference": f"Patient/{patient}"}
    make_task(api, **{"for": subject, "restriction": due(3)})
    first = make_task(api, **{"for": subject, "restriction": due(2)})
    make_task(api, **{"for": subject, "restriction": due(1), "owner": {"reference": BOB}})
    response = api.post(
        "/Task/$claim-next",
        json=parameters(criteria(f"patient=Patient/{patient}&_sort=due"), owner(ALICE)),
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == first["id"]
    assert response.json()["owner"]["reference"] == ALICE
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"] == f"{server.url}/Task/{first['id']}/_history/2"


def test_claim_next_takes_each_task_once_then_answers_nothing_left(api: httpx.Client) -> None:
    patient = new_patient()
    made = {make_task(api, **{"for": {"reference": f"Patient/{patient}"}})["id"] for _ in range(3)}
    body = parameters(criteria(f"patient={patient}&status=requested"), owner(ALICE))
    claimed = [api.post("/Task/$claim-next", json=body) for _ in range(4)]
    assert [r.status_code for r in claimed] == [200, 200, 200, 404]
    assert {r.json()["id"] for r in claimed[:3]} == made
    outcome = claimed[3].json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"
    assert outcome["issue"][0]["details"]["text"] == "no unowned task matches"


def test_claim_next_without_criteria_is_a_400(api: httpx.Client) -> None:
    response = api.post("/Task/$claim-next", json=parameters(owner(ALICE)))
    assert response.status_code == 400, response.text
    assert "criteria" in response.json()["issue"][0]["details"]["text"]


def test_claim_next_criteria_with_an_unknown_parameter_is_a_400(api: httpx.Client) -> None:
    body = parameters(criteria("colour=red"), owner(ALICE))
    response = api.post("/Task/$claim-next", json=body)
    assert response.status_code == 400, response.text
    assert "colour" in response.json()["issue"][0]["details"]["text"]


def test_claim_next_leaves_tasks_outside_the_criteria_alone(api: httpx.Client) -> None:
    patient = new_patient()
    other = make_task(api, **{"for": {"reference": f"Patient/{patient}"}, "status": "completed"})
    body = parameters(criteria(f"patient={patient}&status=requested"), owner(ALICE))
    assert api.post("/Task/$claim-next", json=body).status_code == 404
    assert "owner" not in api.get(f"/Task/{other['id']}").json()


def test_claiming_needs_the_update_scope(server: Server) -> None:
    with server.client(server.token("system/Task.read")) as reader:
        response = reader.post("/Task/nosuchtask/$claim", json=parameters(owner(ALICE)))
    assert response.status_code == 403, response.text


def test_claim_next_needs_the_search_scope_too(server: Server) -> None:
    with server.client(server.token("system/Task.cu")) as writer:
        body = parameters(criteria("status=requested"), owner(ALICE))
        response = writer.post("/Task/$claim-next", json=body)
    assert response.status_code == 403, response.text
    assert "system/Task.s" in response.json()["issue"][0]["diagnostics"]


def test_the_capability_statement_lists_the_claim_operations(api: httpx.Client) -> None:
    task_entry = api.get("/metadata").json()["rest"][0]["resource"][0]
    names = {o["name"]: o["definition"] for o in task_entry["operation"]}
    assert names["claim"] == "http://caretask.dev/fhir/OperationDefinition/Task-claim"
    assert names["claim-next"] == "http://caretask.dev/fhir/OperationDefinition/Task-claim-next"
    assert names["release"] == "http://caretask.dev/fhir/OperationDefinition/Task-release"


# --- a person's claims: their token says who they are --------------------------------------


def person(server: Server) -> tuple[httpx.Client, str]:
    """A signed-in person's client, and their Practitioner reference."""
    user = create_user(server)
    token = person_token(server, user["username"])["access_token"]
    return server.client(token), user["fhirUser"]


def test_a_person_claims_a_task_for_themself_without_a_body(
    api: httpx.Client, server: Server
) -> None:
    task = make_task(api)
    client, me = person(server)
    with client:
        response = client.post(f"/Task/{task['id']}/$claim")
    assert response.status_code == 200, response.text
    assert response.json()["owner"]["reference"] == me


def test_a_person_cannot_claim_for_someone_else(api: httpx.Client, server: Server) -> None:
    task = make_task(api)
    client, _ = person(server)
    with client:
        response = client.post(f"/Task/{task['id']}/$claim", json=parameters(owner(BOB)))
    assert response.status_code == 403, response.text
    assert "for themself" in response.json()["issue"][0]["diagnostics"]


def test_a_person_claims_the_next_task_for_themself(api: httpx.Client, server: Server) -> None:
    patient = new_patient()
    made = make_task(api, **{"for": {"reference": f"Patient/{patient}"}})
    client, me = person(server)
    with client:
        response = client.post("/Task/$claim-next", json=parameters(criteria(f"patient={patient}")))
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["owner"]["reference"]) == (made["id"], me)


def test_a_person_releases_their_own_task_and_not_anothers(
    api: httpx.Client, server: Server
) -> None:
    client, me = person(server)
    mine, theirs = make_task(api, owner={"reference": me}), make_task(api, owner={"reference": BOB})
    with client:
        released = client.post(f"/Task/{mine['id']}/$release")
        refused = client.post(f"/Task/{theirs['id']}/$release")
    assert released.status_code == 200, released.text
    assert "owner" not in released.json()
    assert refused.status_code == 403, refused.text
    assert BOB in refused.json()["issue"][0]["diagnostics"]
