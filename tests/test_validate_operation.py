"""SPEC 10, issue 15: POST /Task/$validate (FHIR's Resource-validate operation), on both
engines.

The body is a Task, or a Parameters with the Task as its `resource` parameter (and `mode`
create or update). The answer is always 200 with an OperationOutcome: every problem found
(each an error issue naming its element), or one `information` issue when the Task is
valid. Nothing is stored. A body that is not JSON is a 400 as on every endpoint. Scope:
$validate reads nothing stored and writes nothing, so it takes the read scope (v1 `read`,
v2 `r`); a token that may only write gets 403.
"""

from __future__ import annotations

import httpx
import pytest

from caretask.domain.references import ID_PATTERN
from tests.support.seed import SEED_CREATE, new_patient, seed_task
from tests.support.server import Server

VALIDATE = "/Task/$validate"


def issues(response: httpx.Response) -> dict[str, tuple[str, str]]:
    """The 200 OperationOutcome's issues: expression -> (severity, code)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return {(i.get("expression") or ["-"])[0]: (i["severity"], i["code"]) for i in outcome["issue"]}


def test_a_valid_task_gets_one_informational_issue(api: httpx.Client) -> None:
    response = api.post(VALIDATE, json=SEED_CREATE)
    assert issues(response) == {"-": ("information", "informational")}
    assert response.json()["issue"][0]["details"]["text"] == "the Task is valid"


def test_an_invalid_task_gets_every_problem_with_its_expression(api: httpx.Client) -> None:
    body = seed_task(
        status="bogus",
        requester=None,
        owner={"reference": "Patient/1"},
        note=[{"text": "x", "time": "yesterday"}],
    )
    assert issues(api.post(VALIDATE, json=body)) == {
        "Task.status": ("error", "code-invalid"),
        "Task.requester": ("error", "required"),
        "Task.owner": ("error", "invalid"),
        "Task.note[0].time": ("error", "structure"),
    }


def test_a_status_the_canvas_profile_refuses_is_a_business_rule_issue(api: httpx.Client) -> None:
    assert issues(api.post(VALIDATE, json=seed_task(status="in-progress"))) == {
        "Task.status": ("error", "business-rule")
    }


def test_validate_stores_nothing(api: httpx.Client) -> None:
    patient = new_patient()
    body = seed_task(for_={"reference": f"Patient/{patient}"})
    assert issues(api.post(VALIDATE, json=body)) == {"-": ("information", "informational")}
    found = api.get("/Task", params={"patient": patient, "_summary": "count"}).json()
    assert found["total"] == 0


def test_a_parameters_body_validates_its_resource(api: httpx.Client) -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": seed_task(intent="bogus")}],
    }
    assert issues(api.post(VALIDATE, json=parameters)) == {"Task.intent": ("error", "code-invalid")}


def test_mode_update_holds_the_task_to_the_update_rules(api: httpx.Client) -> None:
    """Canvas requires a description on create only."""
    task = seed_task(description=None)

    def mode(name: str) -> httpx.Response:
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": task},
                {"name": "mode", "valueCode": name},
            ],
        }
        return api.post(VALIDATE, json=parameters)

    assert issues(mode("create")) == {"Task.description": ("error", "required")}
    assert issues(mode("update")) == {"-": ("information", "informational")}


def test_a_body_that_is_not_a_task_is_reported_not_refused(api: httpx.Client) -> None:
    assert issues(api.post(VALIDATE, json={"resourceType": "Patient"})) == {
        "Task.resourceType": ("error", "invalid")
    }
    assert issues(api.post(VALIDATE, json=[SEED_CREATE])) == {"Task": ("error", "structure")}


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Parameters", "parameter": []},
        {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "create"}]},
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": SEED_CREATE},
                {"name": "mode", "valueCode": "delete"},
            ],
        },
    ],
    ids=["no-parameters", "no-resource", "mode-delete"],
)
def test_parameters_without_one_resource_or_with_another_mode_are_400(
    api: httpx.Client, body: dict[str, object]
) -> None:
    response = api.post(VALIDATE, json=body)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_body_that_is_not_json_is_400_and_another_media_type_415(api: httpx.Client) -> None:
    json_type = {"Content-Type": "application/fhir+json"}
    assert api.post(VALIDATE, content=b"{", headers=json_type).status_code == 400
    assert api.post(VALIDATE, content=b"", headers=json_type).status_code == 400
    text = {"Content-Type": "text/plain"}
    assert api.post(VALIDATE, content=b"{}", headers=text).status_code == 415


def test_validate_is_routed_before_a_task_id_and_is_not_one(api: httpx.Client) -> None:
    """`$validate` is not an id (ID_PATTERN), so `/Task/{id}` never names it: a GET is a
    read of an unknown Task, and the POST reaches the operation."""
    assert not ID_PATTERN.fullmatch("$validate")
    response = api.get(VALIDATE)
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"
    assert api.post(VALIDATE, json=SEED_CREATE).status_code == 200
    assert api.put(VALIDATE, json=SEED_CREATE).status_code == 404  # an update of no Task


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        ("system/Task.read", 200),
        ("system/Task.r", 200),
        ("system/Task.write", 403),
        ("system/Task.cu", 403),
        ("system/*.*", 200),
    ],
)
def test_validate_needs_the_read_scope(server: Server, scope: str, status: int) -> None:
    with server.client(server.token(scope)) as client:
        response = client.post(VALIDATE, json=SEED_CREATE)
    assert response.status_code == status, response.text


def test_validate_without_a_token_is_401(server: Server) -> None:
    response = httpx.post(f"{server.url}{VALIDATE}", json=SEED_CREATE)
    assert response.status_code == 401
