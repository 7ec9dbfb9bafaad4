"""The route table (http.routes): the application's routes, the OpenAPI paths, the
CapabilityStatement's interactions and the audit trail's names for requests all come from it."""

from __future__ import annotations

import orjson
import pytest
from starlette.routing import Route

from caretask.config import Settings
from caretask.domain.capability import SYSTEM_INTERACTIONS, capability_statement
from caretask.http.app import create_app
from caretask.http.routes import (
    INTERACTIONS,
    PAGES,
    SERVED,
    TASK_OPERATIONS,
    audit_name,
    classify,
    openapi_json,
)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/Task", ("search-type", None, None)),
        ("POST", "/Task", ("create", None, None)),
        ("PUT", "/Task", ("update", None, None)),
        ("POST", "/", ("transaction", None, None)),
        ("POST", "/Task/_search", ("search-type", None, None)),
        ("GET", "/Task/abc-1", ("read", "abc-1", None)),
        ("PUT", "/Task/abc-1", ("update", "abc-1", None)),
        ("PATCH", "/Task/abc-1", ("patch", "abc-1", None)),
        ("POST", "/Task/$validate", ("operation", None, None)),
        ("DELETE", "/Task/abc-1", ("delete", "abc-1", None)),
        ("GET", "/Task/abc-1/_history", ("history-instance", "abc-1", None)),
        ("GET", "/Task/_history", ("history-type", None, None)),
        ("GET", "/_history", ("history-system", None, None)),
        ("GET", "/Task/abc-1/_history/3", ("vread", "abc-1", 3)),
        ("POST", "/auth/token/", ("login", None, None)),
        ("GET", "/metadata", ("capabilities", None, None)),
        ("GET", "/Patient/1", ("unknown", None, None)),
    ],
)
def test_each_request_is_named_by_its_fhir_interaction(
    method: str, path: str, expected: tuple[str, str | None, int | None]
) -> None:
    assert classify(method, path) == expected


def test_a_path_segment_that_is_not_an_id_is_not_kept_as_one() -> None:
    assert classify("GET", "/Task/' OR 1=1 --") == ("read", None, None)


def test_every_served_entry_is_a_route_of_the_app_and_no_other() -> None:
    app = create_app(Settings(database_url="sqlite:///unused.db"))  # routes only; never started
    routed = [
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    ]
    # the task board's pages after the table's (not FHIR: not in the table)
    assert routed == [(e.path, e.method) for e in SERVED] + [(p.path, p.method) for p in PAGES]


def test_every_served_entry_is_an_openapi_operation_and_no_other() -> None:
    paths = orjson.loads(openapi_json("http://127.0.0.1"))["paths"]
    documented = {
        (path, method.upper()): operation["operationId"]
        for path, item in paths.items()
        for method, operation in item.items()
        if method != "parameters"
    }
    assert set(documented) == {(e.path, e.method) for e in SERVED}
    assert {documented[e.path, e.method] for e in SERVED} == {e.doc.id for e in SERVED if e.doc}


def test_the_capability_statement_lists_each_served_task_interaction_once() -> None:
    statement = capability_statement(
        "http://127.0.0.1", "2024-01-01", INTERACTIONS, operations=TASK_OPERATIONS
    )
    rest = statement["rest"][0]
    codes = [i["code"] for i in rest["resource"][0]["interaction"]]
    # `operation` is not a restful interaction of a type: its entries are the operations
    served = {e.interaction for e in SERVED if e.task} - set(SYSTEM_INTERACTIONS) - {"operation"}
    assert sorted(codes) == sorted(served)


def test_the_capability_statement_lists_each_task_operation_with_its_definition() -> None:
    statement = capability_statement(
        "http://127.0.0.1", "2024-01-01", INTERACTIONS, operations=TASK_OPERATIONS
    )
    assert statement["rest"][0]["resource"][0]["operation"] == [
        {
            "name": "validate",
            "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
        },
        {
            "name": "claim-next",
            "definition": "http://caretask.dev/fhir/OperationDefinition/Task-claim-next",
        },
        {"name": "claim", "definition": "http://caretask.dev/fhir/OperationDefinition/Task-claim"},
        {
            "name": "release",
            "definition": "http://caretask.dev/fhir/OperationDefinition/Task-release",
        },
    ]


def test_the_capability_statement_lists_each_served_system_interaction_once() -> None:
    statement = capability_statement("http://127.0.0.1", "2024-01-01", INTERACTIONS)
    codes = [i["code"] for i in statement["rest"][0]["interaction"]]
    assert codes == ["transaction", "batch", "history-system"]


def test_the_boards_pages_are_named_board_in_metrics_and_logs() -> None:
    for path in ("/app/", "/app/tasks/abc", "/app/static/v/js/main.js", "/app/nowhere"):
        assert audit_name({"type": "http", "method": "GET", "path": path}) == ("board", None, None)
