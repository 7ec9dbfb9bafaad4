"""Issue 6 item 1: the server describes itself in OpenAPI 3.1 at GET /openapi.json.

Specification: served without a token like /metadata; a valid OpenAPI document (schemathesis
loads and validates it); it lists every route and method the application has, so that it
cannot drift from the routing table; and its search parameters are the CapabilityStatement's.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from starlette.routing import Route

from caretask.config import Settings
from caretask.domain.search_params import PARAMETERS, RESULT_PARAMETERS
from caretask.http.app import create_app
from tests.conftest import Server


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_openapi_json_is_served_without_a_token(server: Server) -> None:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["servers"] == [{"url": server.url}]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()
    assert all(result.ok() for result in schema.get_all_operations())


def test_the_document_lists_every_route_and_method_of_the_app(document: dict[str, Any]) -> None:
    app = create_app(Settings(database_url="sqlite:///unused.db"))  # routes only; never started
    routed = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert documented == routed


def test_fhir_operations_need_the_bearer_token_and_the_others_do_not(
    document: dict[str, Any],
) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            needs_token = path.startswith("/Task")
            assert operation["security"] == ([{"bearer": []}] if needs_token else []), path


def test_search_parameters_are_the_capability_statements(
    document: dict[str, Any], server: Server
) -> None:
    capability = httpx.get(f"{server.url}/metadata").json()
    advertised = {p["name"] for p in capability["rest"][0]["resource"][0]["searchParam"]}
    query = document["paths"]["/Task"]["get"]["parameters"]
    names = {p["name"].partition(":")[0] for p in query if p["in"] == "query"}
    assert advertised == set(PARAMETERS)
    assert names == advertised | (RESULT_PARAMETERS - {"_pretty"}) | {"_include", "_revinclude"}
    form = document["paths"]["/Task/_search"]["post"]["requestBody"]["content"]
    form_names = set(form["application/x-www-form-urlencoded"]["schema"]["properties"])
    assert form_names == {p["name"] for p in query if p["in"] == "query"}
