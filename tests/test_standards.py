"""Standards in both profiles: RFC 9068 claims in access tokens, FHIR's `_summary`,
`_elements`, `_format` and `_pretty`, an Allow header on every 405 and OPTIONS on every
path (RFC 9110), CORS for browser apps (the Fetch standard), and search errors that say
what they expected."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest

from caretask.config import BadSetting, Settings
from caretask.domain.subsetting import SUBSETTED, SUMMARY_ELEMENTS
from caretask.http.routes import SERVED, allowed_methods
from tests.support.clients import create_task, task_for
from tests.support.databases import signing_key
from tests.support.seed import new_patient, seed_task
from tests.support.server import Server

UNKNOWN_ID = "0b5e3c1e-6f0e-4d8e-9a43-3f8d2a9c7e11"
ORIGIN = "https://app.example.org"
FHIR_JSON = "application/fhir+json; charset=utf-8"
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _signed(server: Server, client: str, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "caretask",
        "aud": "caretask-fhir",
        "sub": client,
        "scope": "system/Task.read",
        "iat": now,
        "exp": now + 600,
        **changes,
    }
    return jwt.encode(claims, signing_key(server), algorithm="HS256")


def _search_one(api: httpx.Client, patient: str, **params: str) -> dict[str, Any]:
    response = api.get("/Task", params={"patient": patient, **params})
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert len(entries) == 1
    resource: dict[str, Any] = entries[0]["resource"]
    return resource


def _url(path: str) -> str:
    """A concrete URL for a route table path."""
    return path.replace("{id}", UNKNOWN_ID).replace("{vid}", "1").replace("{token}", "x")


def _paths() -> list[str]:
    return list(dict.fromkeys(e.path for e in SERVED))


# --- access tokens ---------------------------------------------------------------------------


def test_access_token_names_the_client_in_client_id_and_sub(server: Server) -> None:
    client_id, token = server.login()
    claims = _claims(token)
    assert claims["client_id"] == client_id
    assert claims["sub"] == client_id


def test_token_issued_without_client_id_is_still_accepted(server: Server) -> None:
    creds = server.create_client()
    token = _signed(server, creds["client_id"])
    response = httpx.get(f"{server.url}/Task", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_token_whose_client_id_is_not_its_sub_is_401(server: Server) -> None:
    creds = server.create_client()
    token = _signed(server, creds["client_id"], client_id="someone-else")
    response = httpx.get(f"{server.url}/Task", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


# --- _elements -------------------------------------------------------------------------------


def test_elements_keeps_id_meta_status_and_intent(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient)
    resource = _search_one(api, patient, _elements="for")
    assert set(resource) == {"resourceType", "id", "meta", "status", "intent", "for"}


def test_elements_tags_the_task_subsetted(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient)
    resource = _search_one(api, patient, _elements="description")
    assert resource["meta"]["tag"] == [SUBSETTED]


def test_elements_on_a_read_keeps_the_mandatory_elements(api: httpx.Client) -> None:
    task_id = create_task(api, seed_task())
    response = api.get(f"/Task/{task_id}", params={"_elements": "owner"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"resourceType", "id", "meta", "status", "intent", "owner"}
    assert SUBSETTED in body["meta"]["tag"]


# --- _summary --------------------------------------------------------------------------------


def test_summary_true_returns_the_elements_fhir_marks_summary(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient)
    resource = _search_one(api, patient, _summary="true")
    assert set(resource) == {
        "resourceType",
        "id",
        "meta",
        "status",
        "intent",
        "description",
        "for",
        "owner",
        "requester",
    }
    assert set(resource) <= SUMMARY_ELEMENTS
    assert SUBSETTED in resource["meta"]["tag"]


def test_summary_text_returns_text_id_meta_and_the_mandatory_elements(
    api: httpx.Client,
) -> None:
    patient = new_patient()
    task_for(api, patient, text=NARRATIVE)
    resource = _search_one(api, patient, _summary="text")
    assert set(resource) == {"resourceType", "id", "meta", "text", "status", "intent"}
    assert SUBSETTED in resource["meta"]["tag"]


def test_summary_data_leaves_out_only_the_text(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient, text=NARRATIVE)
    whole = _search_one(api, patient)
    resource = _search_one(api, patient, _summary="data")
    assert set(resource) == set(whole) - {"text"}
    assert resource["note"] == whole["note"]
    assert SUBSETTED in resource["meta"]["tag"]


def test_summary_false_returns_the_whole_task_untagged(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient)
    whole = _search_one(api, patient)
    assert _search_one(api, patient, _summary="false") == whole
    assert "tag" not in whole["meta"]


def test_summary_count_returns_the_total_without_entries(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient)
    body = api.get("/Task", params={"patient": patient, "_summary": "count"}).json()
    assert body["total"] == 1
    assert "entry" not in body


def test_summary_true_on_a_read(api: httpx.Client) -> None:
    task_id = create_task(api, seed_task())
    body = api.get(f"/Task/{task_id}", params={"_summary": "true"}).json()
    assert "note" not in body and "input" not in body
    assert body["status"] == "requested"
    assert SUBSETTED in body["meta"]["tag"]


def test_summary_count_on_a_read_is_400(api: httpx.Client) -> None:
    task_id = create_task(api, seed_task())
    response = api.get(f"/Task/{task_id}", params={"_summary": "count"})
    assert response.status_code == 400
    assert "count is for searches" in response.json()["issue"][0]["details"]["text"]


def test_summary_with_elements_is_400(api: httpx.Client) -> None:
    response = api.get("/Task", params={"_summary": "true", "_elements": "status"})
    assert response.status_code == 400
    text = response.json()["issue"][0]["details"]["text"]
    assert text == "_summary=true and _elements cannot be combined; use one of them"


def test_unknown_summary_value_lists_the_valid_ones(api: httpx.Client) -> None:
    response = api.get("/Task", params={"_summary": "maybe"})
    assert response.status_code == 400
    text = response.json()["issue"][0]["details"]["text"]
    assert text == "_summary takes true, text, data, count, false, not 'maybe'"


# --- _format and Accept ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["xml", "application/fhir+xml", "text/xml", "ttl"])
def test_format_other_than_json_is_406(api: httpx.Client, value: str) -> None:
    response = api.get("/Task", params={"_format": value})
    assert response.status_code == 406
    assert response.json()["issue"][0]["code"] == "not-supported"


def test_format_xml_on_a_read_is_406(api: httpx.Client) -> None:
    task_id = create_task(api, seed_task())
    assert api.get(f"/Task/{task_id}", params={"_format": "xml"}).status_code == 406


@pytest.mark.parametrize("value", ["json", "application/json", "application/fhir+json"])
def test_format_json_is_served(api: httpx.Client, value: str) -> None:
    response = api.get("/Task", params={"_format": value, "_count": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == FHIR_JSON


def test_format_json_overrides_an_accept_of_xml(api: httpx.Client) -> None:
    response = api.get(
        "/Task", params={"_format": "json"}, headers={"Accept": "application/fhir+xml"}
    )
    assert response.status_code == 200


def test_accept_of_xml_only_is_406(api: httpx.Client) -> None:
    response = api.get("/Task", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406


def test_metadata_in_xml_is_406(server: Server) -> None:
    assert httpx.get(f"{server.url}/metadata", params={"_format": "xml"}).status_code == 406


# --- _pretty -----------------------------------------------------------------------------------


def test_pretty_true_indents_the_json(api: httpx.Client) -> None:
    task_id = create_task(api, seed_task())
    compact = api.get(f"/Task/{task_id}")
    pretty = api.get(f"/Task/{task_id}", params={"_pretty": "true"})
    assert pretty.text.startswith('{\n  "') and '\n  "resourceType": "Task"' in pretty.text
    assert json.loads(pretty.text) == compact.json()
    assert pretty.headers["content-length"] == str(len(pretty.content))


def test_without_pretty_the_json_is_compact(api: httpx.Client) -> None:
    task_id = create_task(api, seed_task())
    assert "\n" not in api.get(f"/Task/{task_id}", params={"_pretty": "false"}).text


def test_pretty_true_indents_an_error_too(api: httpx.Client) -> None:
    response = api.get("/Task", params={"_pretty": "true", "patinet": "x"})
    assert response.status_code == 400
    assert response.text.startswith('{\n  "resourceType": "OperationOutcome",\n')


def test_pretty_true_indents_a_search(api: httpx.Client) -> None:
    response = api.get("/Task", params={"_pretty": "true", "_count": "1"})
    assert response.text.startswith('{\n  "resourceType": "Bundle",\n')


# --- 405 and OPTIONS ---------------------------------------------------------------------------


def test_405_on_a_task_url_allows_put_too(api: httpx.Client) -> None:
    response = api.request("TRACE", f"/Task/{UNKNOWN_ID}")
    assert response.status_code == 405
    assert response.headers["allow"] == ", ".join(allowed_methods("/Task/{id}"))
    assert {"GET", "HEAD", "PUT", "OPTIONS"} <= set(response.headers["allow"].split(", "))


def test_every_405_allows_the_methods_its_path_serves(api: httpx.Client) -> None:
    for path in _paths():
        response = api.request("TRACE", _url(path))
        assert response.status_code == 405, path
        assert response.headers["allow"] == ", ".join(allowed_methods(path)), path
        assert response.json()["resourceType"] == "OperationOutcome"


def test_options_answers_204_with_allow_on_every_path(server: Server) -> None:
    for path in _paths():
        response = httpx.options(f"{server.url}{_url(path)}")
        assert response.status_code == 204, path
        assert response.headers["allow"] == ", ".join(allowed_methods(path)), path
        assert response.content == b""


def test_allow_lists_each_method_once_in_the_route_tables_order() -> None:
    assert allowed_methods("/Task") == ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


# --- CORS --------------------------------------------------------------------------------------


def _cors_server(make_server: Any, origins: str) -> Server:
    server: Server = make_server(env={"CARETASK_CORS_ORIGINS": origins})
    return server


def _preflight(server: Server, origin: str, method: str = "PUT") -> httpx.Response:
    return httpx.options(
        f"{server.url}/Task/{UNKNOWN_ID}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )


def test_cors_is_off_by_default(server: Server) -> None:
    response = httpx.get(f"{server.url}/metadata", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers
    assert response.json()["rest"][0]["security"]["cors"] is False


def test_preflight_from_an_allowed_origin_is_answered(make_server: Any) -> None:
    server = _cors_server(make_server, f"{ORIGIN},https://other.example.org")
    response = _preflight(server, ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert {"GET", "PUT", "POST"} <= set(
        response.headers["access-control-allow-methods"].split(", ")
    )
    assert response.headers["access-control-allow-headers"] == (
        "authorization, content-type, if-match"
    )
    assert response.headers["access-control-max-age"] == "600"
    assert "Origin" in response.headers["vary"]


def test_preflight_from_another_origin_is_a_400_operation_outcome(make_server: Any) -> None:
    server = _cors_server(make_server, ORIGIN)
    response = _preflight(server, "https://evil.example")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["content-type"] == FHIR_JSON
    issue = response.json()["issue"][0]
    assert issue["details"]["text"] == "CORS preflight refused; not allowed: origin"


def test_preflight_for_a_method_no_path_serves_is_refused(make_server: Any) -> None:
    server = _cors_server(make_server, ORIGIN)
    response = _preflight(server, ORIGIN, method="PROPFIND")
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["text"].endswith("not allowed: method")


def test_an_allowed_origin_can_read_location_etag_and_last_modified(make_server: Any) -> None:
    server = _cors_server(make_server, ORIGIN)
    with server.client(server.token()) as api:
        response = api.post("/Task", json=seed_task(), headers={"Origin": ORIGIN})
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == ORIGIN
    exposed = set(response.headers["access-control-expose-headers"].split(", "))
    assert {"Location", "ETag", "Last-Modified"} <= exposed
    assert "Origin" in response.headers["vary"]


def test_another_origin_gets_no_allow_origin(make_server: Any) -> None:
    server = _cors_server(make_server, ORIGIN)
    response = httpx.get(f"{server.url}/metadata", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_a_refusal_by_the_request_limits_is_readable_by_an_allowed_origin(
    make_server: Any,
) -> None:
    server = _cors_server(make_server, ORIGIN)
    headers = {"Origin": ORIGIN, **{f"X-Extra-{n}": "1" for n in range(120)}}
    response = httpx.get(f"{server.url}/Task", headers=headers)
    assert response.status_code == 431
    assert response.headers["access-control-allow-origin"] == ORIGIN


def test_a_401_is_readable_by_an_allowed_origin(make_server: Any) -> None:
    server = _cors_server(make_server, ORIGIN)
    response = httpx.get(f"{server.url}/Task", headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "WWW-Authenticate" in response.headers["access-control-expose-headers"]


def test_cors_star_allows_any_origin(make_server: Any) -> None:
    server = _cors_server(make_server, "*")
    response = httpx.get(f"{server.url}/metadata", headers={"Origin": "https://any.example"})
    assert response.headers["access-control-allow-origin"] == "*"


def test_capability_statement_says_cors_when_it_is_on(make_server: Any) -> None:
    server = _cors_server(make_server, ORIGIN)
    statement = httpx.get(f"{server.url}/metadata").json()
    assert statement["rest"][0]["security"]["cors"] is True


@pytest.mark.parametrize("origin", ["app.example.org", "https://app.example.org/path", "https://"])
def test_a_cors_origin_that_is_not_an_origin_is_refused(origin: str) -> None:
    with pytest.raises(BadSetting, match="is not an origin"):
        Settings(cors_origins=(origin,))


# --- search errors -----------------------------------------------------------------------------


def test_unknown_date_prefix_lists_the_valid_ones(api: httpx.Client) -> None:
    response = api.get("/Task", params={"authored-on": "zz2024"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["details"]["text"] == (
        "authored-on: unknown prefix 'zz'; a date takes one of eq, ne, gt, lt, ge, le, sa, eb, "
        "ap, or none (eq), before the date"
    )


def test_format_xml_in_a_search_form_is_406(api: httpx.Client) -> None:
    response = api.post("/Task/_search", data={"_format": "xml"})
    assert response.status_code == 406
