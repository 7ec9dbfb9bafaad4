"""SPEC 10: conditional update, `PUT /Task?<search>` (FHIR R4 http.html#cond-update): no
match creates, one match updates that task, several are a 412."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.seed import SEED_CREATE, new_patient
from tests.support.server import Server


def _with_identifier() -> tuple[dict[str, Any], dict[str, str]]:
    value = new_patient()
    body = {**SEED_CREATE, "identifier": [{"system": "urn:caretask:test", "value": value}]}
    return body, {"identifier": f"urn:caretask:test|{value}"}


def _id(response: httpx.Response) -> str:
    return response.headers["location"].split("/Task/")[1].split("/")[0]


def test_conditional_update_without_a_match_creates_the_task(api: httpx.Client) -> None:
    body, search = _with_identifier()
    response = api.put("/Task", params=search, json=body)
    assert response.status_code == 201
    assert response.headers["etag"] == 'W/"1"'
    found = api.get("/Task", params=search).json()
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["id"] == _id(response)


def test_conditional_update_with_one_match_updates_that_task(api: httpx.Client) -> None:
    body, search = _with_identifier()
    task_id = _id(api.post("/Task", json=body))
    response = api.put("/Task", params=search, json={**body, "status": "completed"})
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"].endswith(f"/Task/{task_id}/_history/2")
    assert api.get(f"/Task/{task_id}").json()["status"] == "completed"


def test_conditional_update_with_several_matches_is_412_and_writes_nothing(
    api: httpx.Client,
) -> None:
    body, search = _with_identifier()
    api.post("/Task", json=body)
    api.post("/Task", json=body)
    response = api.put("/Task", params=search, json={**body, "status": "completed"})
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"
    found = api.get("/Task", params={**search, "status": "completed"}).json()
    assert found["total"] == 0


def test_conditional_update_with_the_matching_id_in_the_body_updates(api: httpx.Client) -> None:
    body, search = _with_identifier()
    task_id = _id(api.post("/Task", json=body))
    response = api.put("/Task", params=search, json={**body, "id": task_id})
    assert response.status_code == 200


def test_conditional_update_with_another_id_in_the_body_is_400(api: httpx.Client) -> None:
    body, search = _with_identifier()
    task_id = _id(api.post("/Task", json=body))
    response = api.put("/Task", params=search, json={**body, "id": "another-id"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Task.id"]
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"1"'


def test_conditional_update_without_a_match_and_with_an_id_is_400_as_ids_are_the_servers(
    api: httpx.Client,
) -> None:
    # FHIR R4 cond-update "no matches, id provided": update-as-create, which this server
    # does not do (updateCreate false), so it refuses
    body, search = _with_identifier()
    response = api.put("/Task", params=search, json={**body, "id": "client-chosen"})
    assert response.status_code == 400
    assert "assigns the ids" in response.json()["issue"][0]["details"]["text"]
    assert api.get("/Task", params=search).json()["total"] == 0


def test_conditional_update_honours_if_match(api: httpx.Client) -> None:
    body, search = _with_identifier()
    task_id = _id(api.post("/Task", json=body))
    stale = api.put("/Task", params=search, json=body, headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    current = api.put("/Task", params=search, json=body, headers={"If-Match": 'W/"1"'})
    assert current.status_code == 200
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"2"'


def test_conditional_update_with_if_match_and_no_match_is_412(api: httpx.Client) -> None:
    body, search = _with_identifier()
    response = api.put("/Task", params=search, json=body, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert api.get("/Task", params=search).json()["total"] == 0


def test_conditional_update_without_a_search_is_400(api: httpx.Client) -> None:
    response = api.put("/Task", json=SEED_CREATE)
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "invalid"


def test_conditional_update_with_an_unknown_parameter_is_400_naming_it(
    api: httpx.Client,
) -> None:
    response = api.put("/Task", params={"patinet": "1"}, json=SEED_CREATE)
    assert response.status_code == 400
    assert "patinet" in response.json()["issue"][0]["details"]["text"]


def test_conditional_update_that_would_create_needs_the_create_scope(server: Server) -> None:
    body, search = _with_identifier()
    with server.client(server.token("system/Task.ru")) as client:
        refused = client.put("/Task", params=search, json=body)
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"
    with server.client(server.token("system/Task.rs")) as client:
        assert client.put("/Task", params=search, json=body).status_code == 403


def test_conditional_update_returns_the_task_when_preferred(api: httpx.Client) -> None:
    body, search = _with_identifier()
    response = api.put(
        "/Task", params=search, json=body, headers={"Prefer": "return=representation"}
    )
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "1"
