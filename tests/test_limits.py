"""Issue 6 item 6: request limits answered as OperationOutcomes before any work is done."""

from __future__ import annotations

import httpx

from tests.conftest import Server, seed_task

FHIR_JSON = "application/fhir+json; charset=utf-8"


def _assert_outcome(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == FHIR_JSON
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "too-long"


def test_headers_over_16_kb_are_431(api: httpx.Client) -> None:
    _assert_outcome(api.get("/Task", headers={"X-Padding": "a" * 17_000}), 431)


def test_more_than_100_headers_are_431(api: httpx.Client) -> None:
    headers = {f"X-Extra-{i}": "x" for i in range(101)}
    _assert_outcome(api.get("/Task", headers=headers), 431)


def test_a_url_over_8_kb_is_414(api: httpx.Client) -> None:
    _assert_outcome(api.get("/Task", params={"description": "a" * 8_200}), 414)


def test_requests_within_the_limits_are_served(api: httpx.Client) -> None:
    headers = {"X-Padding": "a" * 10_000, **{f"X-Extra-{i}": "x" for i in range(50)}}
    response = api.get("/Task", params={"description": "a" * 7_000}, headers=headers)
    assert response.status_code == 200


def test_the_limits_are_configurable(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(env={"CARETASK_MAX_URL_BYTES": "100", "CARETASK_MAX_HEADERS": "200"})
    with srv.client(srv.token()) as client:
        _assert_outcome(client.get("/Task", params={"description": "a" * 200}), 414)
        headers = {f"X-Extra-{i}": "x" for i in range(150)}
        assert client.get("/Task", headers=headers).status_code == 200


def _nested_extension(depth: int) -> dict[str, object]:
    extension: dict[str, object] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(depth):
        extension = {"url": "http://example.org/branch", "extension": [extension]}
    return extension


def test_json_nested_deeper_than_32_levels_is_400(api: httpx.Client) -> None:
    response = api.post("/Task", json=seed_task(extension=[_nested_extension(16)]))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert issue["details"]["text"] == "nesting deeper than 32 levels"


def test_the_json_depth_limit_is_configurable(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(env={"CARETASK_MAX_JSON_DEPTH": "8"})
    with srv.client(srv.token()) as client:
        assert client.post("/Task", json=seed_task()).status_code == 201
        response = client.post("/Task", json=seed_task(extension=[_nested_extension(3)]))
        assert response.status_code == 400
        assert response.json()["issue"][0]["details"]["text"] == "nesting deeper than 8 levels"
