"""The server describes itself in OpenAPI 3.1 at GET /openapi.json.

Specification: served without a token like /metadata; a valid OpenAPI document (schemathesis
loads and validates it); it lists every route and method the application has, so that it
cannot drift from the routing table; and its search parameters are the CapabilityStatement's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from starlette.routing import Route

from caretask.config import Settings
from caretask.domain.search_params import PARAMETERS, RESULT_PARAMETERS
from caretask.domain.task_rules import WHITESPACE
from caretask.http.app import create_app
from caretask.http.routes import PAGES
from tests.support.server import Server


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
    # the board's pages are for people, not an API: deliberately left out
    pages = {(page.path, page.method.lower()) for page in PAGES}
    assert pages <= routed
    assert documented == routed - pages


def test_fhir_operations_need_the_bearer_token_and_the_others_do_not(
    document: dict[str, Any],
) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            needs_token = path.startswith(("/Task", "/Subscription", "/_history")) or path == "/"
            assert operation["security"] == ([{"bearer": []}] if needs_token else []), path


def test_search_parameters_are_the_capability_statements(
    document: dict[str, Any], server: Server
) -> None:
    capability = httpx.get(f"{server.url}/metadata").json()
    advertised = {p["name"] for p in capability["rest"][0]["resource"][0]["searchParam"]}
    query = document["paths"]["/Task"]["get"]["parameters"]
    names = {p["name"].partition(":")[0] for p in query if p["in"] == "query"}
    assert advertised == set(PARAMETERS)
    assert names == advertised | RESULT_PARAMETERS | {"_include", "_revinclude"}
    form = document["paths"]["/Task/_search"]["post"]["requestBody"]["content"]
    form_names = set(form["application/x-www-form-urlencoded"]["schema"]["properties"])
    assert form_names == {p["name"] for p in query if p["in"] == "query"}


# characters that one regex dialect counts as whitespace (or a digit, or a word character)
# and another does not: Python's `\s` (the server's), ECMA-262's (the validator's: it adds
# U+FEFF, drops U+0085) and Python's ASCII `\s` (what the fuzzer draws values from)
EDGE_CHARACTERS = sorted(
    {chr(c) for c in range(0x3001) if chr(c).isspace()}
    | {"\ufeff", "\u200b", "\u180e", "\u0660", "\u00e9", "\u00b2"}
)
PROBE_AROUND = [("", ""), ("a", ""), ("", "b"), ("a", "b"), ("Patient/a", ""), ("2024", "")]


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_the_documents_whitespace_is_the_servers() -> None:
    spelled = re.compile(f"[{WHITESPACE}]")
    for code in range(0x110000):
        assert bool(spelled.fullmatch(chr(code))) == bool(re.fullmatch(r"\s", chr(code))), code


def test_every_pattern_admits_the_same_values_in_ecma_262_and_in_python(
    document: dict[str, Any],
) -> None:
    """The fuzzer draws values with Python's `re` (ASCII), the server checks them with
    Python's (Unicode), and schemathesis validates answers with ECMA-262's, as JSON Schema
    says: a pattern that reads differently made a 201 fail its own document."""
    disagreements = []
    for pattern in sorted(set(_patterns(document))):
        ecma = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
        # Python's `$` also matches before a final newline; ECMA's (and a fullmatch) do not
        python = pattern.removesuffix("$") + "\\Z" if pattern.endswith("$") else pattern
        readings = (re.compile(python), re.compile(python, re.ASCII))
        for before, after in PROBE_AROUND:
            for char in EDGE_CHARACTERS:
                value = f"{before}{char}{after}"
                answers = {ecma.is_valid(value), *(bool(r.search(value)) for r in readings)}
                if len(answers) > 1:
                    disagreements.append((pattern[:60], value))
    assert disagreements == []
