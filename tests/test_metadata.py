"""SPEC 5: the CapabilityStatement lists exactly what works."""

from __future__ import annotations

import httpx

from caretask.domain.search_params import PARAMETERS
from tests.support.server import Server


def test_metadata_is_a_fhir_401_capability_statement_without_token(server: Server) -> None:
    response = httpx.get(f"{server.url}/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    assert body["kind"] == "instance"


def test_capability_lists_the_task_interactions_that_work(server: Server) -> None:
    rest = httpx.get(f"{server.url}/metadata").json()["rest"][0]
    resource = rest["resource"][0]
    assert resource["type"] == "Task"
    codes = {i["code"] for i in resource["interaction"]}
    assert codes == {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    }
    assert resource["updateCreate"] is False
    assert resource["conditionalDelete"] == "single"


def test_capability_lists_the_patch_formats_and_the_task_operations(server: Server) -> None:
    statement = httpx.get(f"{server.url}/metadata").json()
    assert statement["patchFormat"] == ["application/json-patch+json", "application/fhir+json"]
    resource = statement["rest"][0]["resource"][0]
    ours = "http://caretask.dev/fhir/OperationDefinition/Task-"
    assert resource["operation"] == [
        {
            "name": "validate",
            "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
        },
        {"name": "claim-next", "definition": ours + "claim-next"},
        {"name": "claim", "definition": ours + "claim"},
        {"name": "release", "definition": ours + "release"},
    ]


def test_capability_lists_the_system_interactions_and_every_conditional_form(
    server: Server,
) -> None:
    rest = httpx.get(f"{server.url}/metadata").json()["rest"][0]
    codes = ("transaction", "batch", "history-system")
    assert rest["interaction"] == [{"code": code} for code in codes]
    assert rest["resource"][0]["conditionalCreate"] is True
    assert rest["resource"][0]["conditionalUpdate"] is True
    assert rest["resource"][0]["conditionalDelete"] == "single"


def test_capability_lists_every_search_parameter_and_nothing_else(server: Server) -> None:
    resource = httpx.get(f"{server.url}/metadata").json()["rest"][0]["resource"][0]
    names = {p["name"] for p in resource["searchParam"]}
    assert names == set(PARAMETERS)
    assert {"_id", "label", "owner", "description", "patient", "requester", "status"} <= names


def test_every_listed_search_parameter_is_accepted(server: Server, api: httpx.Client) -> None:
    resource = httpx.get(f"{server.url}/metadata").json()["rest"][0]["resource"][0]
    samples = {"token": "requested", "string": "x", "reference": "abc", "date": "2024"}
    for param in resource["searchParam"]:
        value = samples[param["type"]]
        if param["name"] == "_id":
            value = "abc"
        elif param["name"] == "intent":
            value = "order"
        elif param["name"] == "priority":
            value = "urgent"
        response = api.get("/Task", params={param["name"]: value})
        assert response.status_code == 200, (param["name"], response.text)


def test_capability_names_the_token_endpoint(server: Server) -> None:
    security = httpx.get(f"{server.url}/metadata").json()["rest"][0]["security"]
    uris = security["extension"][0]["extension"]
    assert {"url": "token", "valueUri": f"{server.url}/auth/token/"} in uris
