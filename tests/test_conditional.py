"""SPEC 10: conditional interactions follow FHIR's rules for no, one and several matches."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.seed import SEED_CREATE, new_patient
from tests.support.server import Server


def _with_identifier() -> tuple[dict[str, Any], str]:
    value = new_patient()
    body = {**SEED_CREATE, "identifier": [{"system": "urn:caretask:test", "value": value}]}
    return body, f"identifier=urn:caretask:test|{value}"


def test_conditional_create_without_a_match_creates(api: httpx.Client) -> None:
    body, search = _with_identifier()
    response = api.post("/Task", json=body, headers={"If-None-Exist": search})
    assert response.status_code == 201
    assert response.headers["etag"] == 'W/"1"'
    assert api.get("/Task", params=[tuple(search.split("=", 1))]).json()["total"] == 1


def test_conditional_create_with_one_match_answers_200_with_that_task_and_writes_nothing(
    api: httpx.Client,
) -> None:
    body, search = _with_identifier()
    first = api.post("/Task", json=body, headers={"If-None-Exist": search})
    again = api.post(
        "/Task",
        json={**body, "description": "a second one"},
        headers={"If-None-Exist": search, "Prefer": "return=representation"},
    )
    assert again.status_code == 200
    task_id = first.headers["location"].rsplit("/", 1)[1]
    assert again.headers["location"].endswith(f"/Task/{task_id}/_history/1")
    assert again.headers["etag"] == 'W/"1"'
    assert again.json()["id"] == task_id
    assert again.json()["description"] == SEED_CREATE["description"]
    assert api.get(f"/Task/{task_id}/_history").json()["total"] == 1


def test_conditional_create_with_several_matches_is_412_and_writes_nothing(
    api: httpx.Client,
) -> None:
    body, search = _with_identifier()
    api.post("/Task", json=body)
    api.post("/Task", json=body)
    response = api.post("/Task", json=body, headers={"If-None-Exist": search})
    assert response.status_code == 412
    issue = response.json()["issue"][0]
    assert issue["code"] == "multiple-matches"
    assert api.get("/Task", params=[tuple(search.split("=", 1))]).json()["total"] == 2


def test_conditional_create_accepts_the_search_with_a_leading_task_question_mark(
    api: httpx.Client,
) -> None:
    body, search = _with_identifier()
    api.post("/Task", json=body)
    response = api.post("/Task", json=body, headers={"If-None-Exist": f"Task?{search}"})
    assert response.status_code == 200


def test_conditional_create_with_an_unknown_parameter_is_400_naming_it(
    api: httpx.Client,
) -> None:
    response = api.post("/Task", json=SEED_CREATE, headers={"If-None-Exist": "patinet=123"})
    assert response.status_code == 400
    assert "patinet" in response.json()["issue"][0]["details"]["text"]


def test_conditional_create_with_an_empty_search_is_400(api: httpx.Client) -> None:
    response = api.post("/Task", json=SEED_CREATE, headers={"If-None-Exist": ""})
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "invalid"


def test_conditional_create_with_an_invalid_body_is_400_even_when_a_task_matches(
    api: httpx.Client,
) -> None:
    body, search = _with_identifier()
    api.post("/Task", json=body)
    response = api.post("/Task", json={"resourceType": "Task"}, headers={"If-None-Exist": search})
    assert response.status_code == 400


def test_conditional_create_takes_its_search_from_the_query_string_too(
    api: httpx.Client,
) -> None:
    body, search = _with_identifier()
    first = api.post(f"/Task?{search}", json=body)
    again = api.post(f"/Task?{search}&_format=json", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["location"].startswith(first.headers["location"])


def test_conditional_create_with_both_a_header_and_a_query_is_400(api: httpx.Client) -> None:
    body, search = _with_identifier()
    response = api.post(f"/Task?{search}", json=body, headers={"If-None-Exist": search})
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "invalid"


def test_a_create_whose_query_only_says_how_to_answer_is_unconditional(
    api: httpx.Client,
) -> None:
    body, _ = _with_identifier()
    assert api.post("/Task?_format=json&_pretty=true", json=body).status_code == 201
    assert api.post("/Task?_format=json&_pretty=true", json=body).status_code == 201


JSON_PATCH = {"Content-Type": "application/json-patch+json"}
COMPLETE = [{"op": "replace", "path": "/status", "value": "completed"}]


def test_conditional_patch_of_the_one_match_patches_it(api: httpx.Client) -> None:
    body, search = _with_identifier()
    task_id = api.post("/Task", json=body).headers["location"].rsplit("/", 1)[1]
    response = api.patch(f"/Task?{search}", json=COMPLETE, headers=JSON_PATCH)
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"].endswith(f"/Task/{task_id}/_history/2")
    assert api.get(f"/Task/{task_id}").json()["status"] == "completed"


def test_conditional_patch_without_a_match_is_404(api: httpx.Client) -> None:
    _, search = _with_identifier()
    response = api.patch(f"/Task?{search}", json=COMPLETE, headers=JSON_PATCH)
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


def test_conditional_patch_with_several_matches_is_412_and_patches_none(
    api: httpx.Client,
) -> None:
    body, search = _with_identifier()
    ids = [api.post("/Task", json=body).headers["location"].rsplit("/", 1)[1] for _ in "ab"]
    response = api.patch(f"/Task?{search}", json=COMPLETE, headers=JSON_PATCH)
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"
    assert {api.get(f"/Task/{i}").json()["meta"]["versionId"] for i in ids} == {"1"}


def test_conditional_patch_with_a_stale_if_match_is_412(api: httpx.Client) -> None:
    body, search = _with_identifier()
    api.post("/Task", json=body)
    headers = {**JSON_PATCH, "If-Match": 'W/"7"'}
    assert api.patch(f"/Task?{search}", json=COMPLETE, headers=headers).status_code == 412


def test_conditional_patch_without_a_search_is_400(api: httpx.Client) -> None:
    response = api.patch("/Task", json=COMPLETE, headers=JSON_PATCH)
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "invalid"


def test_conditional_delete_of_the_one_match_deletes_it(api: httpx.Client) -> None:
    body, search = _with_identifier()
    task_id = api.post("/Task", json=body).headers["location"].rsplit("/", 1)[1]
    response = api.delete(f"/Task?{search}")
    assert response.status_code == 204
    assert response.headers["etag"] == 'W/"2"'
    assert api.get(f"/Task/{task_id}").status_code == 410


def test_conditional_delete_without_a_match_is_204_without_an_etag(api: httpx.Client) -> None:
    _, search = _with_identifier()
    response = api.delete(f"/Task?{search}")
    assert response.status_code == 204
    assert "etag" not in response.headers


def test_conditional_delete_again_finds_nothing_left_to_delete(api: httpx.Client) -> None:
    body, search = _with_identifier()
    task_id = api.post("/Task", json=body).headers["location"].rsplit("/", 1)[1]
    assert api.delete(f"/Task?{search}").status_code == 204
    again = api.delete(f"/Task?{search}")
    assert again.status_code == 204
    assert "etag" not in again.headers
    assert api.get(f"/Task/{task_id}/_history").json()["total"] == 2


def test_conditional_delete_with_several_matches_is_412_and_deletes_none(
    api: httpx.Client,
) -> None:
    body, search = _with_identifier()
    ids = [api.post("/Task", json=body).headers["location"].rsplit("/", 1)[1] for _ in "ab"]
    response = api.delete(f"/Task?{search}")
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"
    assert {api.get(f"/Task/{i}").status_code for i in ids} == {200}


def test_conditional_delete_without_a_search_is_400_and_deletes_nothing(
    api: httpx.Client,
) -> None:
    response = api.delete("/Task?_format=json")
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "invalid"


def test_conditional_create_needs_the_search_scope(server: Server) -> None:
    body, search = _with_identifier()
    with server.client(server.token("system/Task.c")) as client:
        response = client.post("/Task", json=body, headers={"If-None-Exist": search})
    assert response.status_code == 403
    assert "system/Task.s" in response.json()["issue"][0]["diagnostics"]


def test_a_conditional_create_that_finds_a_task_shows_it_only_to_a_reader(
    server: Server, api: httpx.Client
) -> None:
    body, search = _with_identifier()
    api.post("/Task", json=body)
    headers = {"If-None-Exist": search, "Prefer": "return=representation"}
    with server.client(server.token("system/Task.cs")) as client:
        response = client.post("/Task", json=body, headers=headers)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["etag"] == 'W/"1"'


def test_conditional_update_patch_and_delete_need_the_search_scope(server: Server) -> None:
    _, search = _with_identifier()
    with server.client(server.token("system/Task.cud")) as client:
        put = client.put(f"/Task?{search}", json=SEED_CREATE)
        patch = client.patch(f"/Task?{search}", json=COMPLETE, headers=JSON_PATCH)
        delete = client.delete(f"/Task?{search}")
    assert (put.status_code, patch.status_code, delete.status_code) == (403, 403, 403)
