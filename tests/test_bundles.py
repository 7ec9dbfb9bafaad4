"""SPEC 10: batch and transaction Bundles at POST / (FHIR R4 http.html#transaction): entries
for create, update, read, vread and search with their conditional forms, a transaction
all or nothing in FHIR's processing order with its urn:uuid references resolved, a batch
answering each entry on its own."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.databases import engine_database
from tests.support.seed import SEED_CREATE, new_patient
from tests.support.server import Server
from tests.test_audit import FAST_FLUSH, audit_lines, what


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _identified(value: str | None = None) -> tuple[dict[str, Any], str]:
    value = value or new_patient()
    body = {**SEED_CREATE, "identifier": [{"system": "urn:caretask:test", "value": value}]}
    return body, f"identifier=urn:caretask:test|{value}"


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _create(body: dict[str, Any], full_url: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": body,
        "request": {"method": "POST", "url": "Task", **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _put(url: str, body: dict[str, Any], **request: str) -> dict[str, Any]:
    return {"resource": body, "request": {"method": "PUT", "url": url, **request}}


def _get(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


def _id(location: str) -> str:
    return location.split("Task/")[1].split("/")[0]


def _total(api: httpx.Client, search: str) -> int:
    name, value = search.split("=", 1)
    return int(api.get("/Task", params={name: value}).json()["total"])


# --- transaction -------------------------------------------------------------------------------


def test_a_transaction_creates_every_entry_and_answers_in_request_order(
    api: httpx.Client,
) -> None:
    first, search_a = _identified()
    second, search_b = _identified()
    response = api.post("/", json=_bundle("transaction", _create(first), _create(second)))
    assert response.status_code == 200
    body = response.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "201 Created"]
    for entry, search in zip(body["entry"], (search_a, search_b), strict=True):
        assert entry["response"]["location"].endswith("/_history/1")
        assert entry["response"]["etag"] == 'W/"1"'
        assert _total(api, search) == 1


def test_a_transactions_writes_share_one_last_updated(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    entries = [_create(_identified()[0]) for _ in range(3)]
    entries.append(_put(f"Task/{task_id}", SEED_CREATE))
    answered = api.post("/", json=_bundle("transaction", *entries)).json()["entry"]
    stamps = {e["response"]["lastModified"] for e in answered}
    assert len(stamps) == 1
    task = api.get(f"/Task/{_id(answered[0]['response']['location'])}").json()
    assert task["meta"]["lastUpdated"] == stamps.pop()


def test_a_transaction_whose_third_entry_is_invalid_writes_nothing(api: httpx.Client) -> None:
    one, search_one = _identified()
    two, search_two = _identified()
    bad = {**SEED_CREATE, "status": "not-a-status"}
    response = api.post("/", json=_bundle("transaction", _create(one), _create(two), _create(bad)))
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"][0].startswith("Bundle.entry[2]")
    assert outcome["issue"][0]["diagnostics"].startswith("entry 2: POST Task")
    assert _total(api, search_one) == 0
    assert _total(api, search_two) == 0


def test_a_transaction_that_fails_inside_the_database_rolls_back_its_earlier_writes(
    api: httpx.Client,
) -> None:
    created, search = _identified()
    missing = _put("Task/no-such-task", SEED_CREATE)
    response = api.post("/", json=_bundle("transaction", _create(created), missing))
    assert response.status_code == 404
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert _total(api, search) == 0


def test_a_transaction_resolves_urn_uuid_references_to_the_assigned_ids(
    api: httpx.Client,
) -> None:
    parent_urn = _urn()
    parent, _ = _identified()
    child = {**_identified()[0], "partOf": [{"reference": parent_urn}]}
    # the child comes first: references resolve whatever the order
    bundle = _bundle("transaction", _create(child, _urn()), _create(parent, parent_urn))
    answered = api.post("/", json=bundle).json()["entry"]
    child_id = _id(answered[0]["response"]["location"])
    parent_id = _id(answered[1]["response"]["location"])
    stored = api.get(f"/Task/{child_id}").json()
    assert stored["partOf"] == [{"reference": f"Task/{parent_id}"}]


def test_a_transaction_processes_creates_before_updates_and_reads_after_writes(
    api: httpx.Client,
) -> None:
    existing = api.post("/Task", json=SEED_CREATE)
    task_id = _id(existing.headers["location"])
    body, search = _identified()
    bundle = _bundle(
        "transaction",
        _get(f"Task/{task_id}"),
        _put(f"Task/{task_id}", {**SEED_CREATE, "status": "completed"}),
        _create(body),
        _get(f"Task?{search}"),
    )
    answered = api.post("/", json=bundle).json()["entry"]
    assert [e["response"]["status"] for e in answered] == [
        "200 OK",
        "200 OK",
        "201 Created",
        "200 OK",
    ]
    assert answered[0]["resource"]["status"] == "completed"  # the read sees the update
    assert answered[0]["response"]["etag"] == 'W/"2"'
    assert answered[1]["response"]["location"] == f"Task/{task_id}/_history/2"
    assert answered[3]["resource"]["type"] == "searchset"
    assert answered[3]["resource"]["total"] == 1  # the search sees the create


def test_a_search_entry_finding_several_tasks_answers_them_all(api: httpx.Client) -> None:
    body, search = _identified()
    api.post("/Task", json=body)
    api.post("/Task", json=body)
    for kind in ("transaction", "batch"):
        response = api.post("/", json=_bundle(kind, _get(f"Task?{search}")))
        assert response.status_code == 200
        entry = response.json()["entry"][0]
        assert entry["response"]["status"] == "200 OK"
        assert entry["resource"]["total"] == 2


def test_a_conditional_create_in_a_transaction_finds_the_existing_task(
    api: httpx.Client,
) -> None:
    body, search = _identified()
    task_id = _id(api.post("/Task", json=body).headers["location"])
    urn = _urn()
    child = {**SEED_CREATE, "partOf": [{"reference": urn}]}
    bundle = _bundle("transaction", _create(body, urn, ifNoneExist=search), _create(child))
    answered = api.post("/", json=bundle).json()["entry"]
    assert answered[0]["response"]["status"] == "200 OK"
    assert answered[0]["response"]["location"] == f"Task/{task_id}/_history/1"
    child_id = _id(answered[1]["response"]["location"])
    assert api.get(f"/Task/{child_id}").json()["partOf"] == [{"reference": f"Task/{task_id}"}]
    assert _total(api, search) == 1


def test_a_conditional_update_in_a_transaction_creates_then_updates(api: httpx.Client) -> None:
    body, search = _identified()
    entry = _put(f"Task?{search}", body)
    first = api.post("/", json=_bundle("transaction", entry)).json()["entry"][0]
    assert first["response"]["status"] == "201 Created"
    second = api.post("/", json=_bundle("transaction", entry)).json()["entry"][0]
    assert second["response"]["status"] == "200 OK"
    assert second["response"]["etag"] == 'W/"2"'
    assert _total(api, search) == 1


def test_a_transaction_with_an_if_match_that_is_not_current_is_412(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    entry = _put(f"Task/{task_id}", SEED_CREATE, ifMatch='W/"5"')
    response = api.post("/", json=_bundle("transaction", entry))
    assert response.status_code == 412
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"1"'


def test_a_transaction_writing_one_task_twice_is_400(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    entry = _put(f"Task/{task_id}", SEED_CREATE)
    response = api.post("/", json=_bundle("transaction", entry, entry))
    assert response.status_code == 400
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"1"'


def test_a_transaction_with_two_entries_of_the_same_condition_is_400(api: httpx.Client) -> None:
    body, search = _identified()
    entry = _create(body, ifNoneExist=search)
    response = api.post("/", json=_bundle("transaction", entry, entry))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert _total(api, search) == 0


def test_a_transaction_may_update_the_task_its_conditional_create_found(
    api: httpx.Client,
) -> None:
    body, search = _identified()
    task_id = _id(api.post("/Task", json=body).headers["location"])
    bundle = _bundle(
        "transaction",
        _create(body, ifNoneExist=search),
        _put(f"Task/{task_id}", {**body, "status": "completed"}),
    )
    answered = api.post("/", json=bundle).json()["entry"]
    assert [e["response"]["status"] for e in answered] == ["200 OK", "200 OK"]
    assert answered[1]["response"]["etag"] == 'W/"2"'


def test_a_transaction_read_of_an_unknown_task_fails_it_whole(api: httpx.Client) -> None:
    body, search = _identified()
    response = api.post("/", json=_bundle("transaction", _create(body), _get("Task/unknown-1")))
    assert response.status_code == 404
    assert _total(api, search) == 0


def test_a_transaction_returns_the_written_tasks_when_preferred(api: httpx.Client) -> None:
    response = api.post(
        "/",
        json=_bundle("transaction", _create(SEED_CREATE)),
        headers={"Prefer": "return=representation"},
    )
    entry = response.json()["entry"][0]
    assert entry["resource"]["resourceType"] == "Task"
    assert entry["fullUrl"].endswith(f"/Task/{entry['resource']['id']}")


def test_a_read_entry_with_the_current_if_none_match_is_304(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    entry = {"request": {"method": "GET", "url": f"Task/{task_id}", "ifNoneMatch": 'W/"1"'}}
    answered = api.post("/", json=_bundle("batch", entry)).json()["entry"][0]
    assert answered == {
        "response": {
            "status": "304 Not Modified",
            "etag": 'W/"1"',
            "lastModified": answered["response"]["lastModified"],
        }
    }


def test_a_transaction_answers_vread(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    answered = api.post("/", json=_bundle("transaction", _get(f"Task/{task_id}/_history/1")))
    entry = answered.json()["entry"][0]
    assert entry["response"]["status"] == "200 OK"
    assert entry["resource"]["meta"]["versionId"] == "1"


# --- batch -------------------------------------------------------------------------------------


def test_a_batch_answers_each_entry_on_its_own(api: httpx.Client) -> None:
    good, search = _identified()
    bad = {**SEED_CREATE, "status": "not-a-status"}
    bundle = _bundle(
        "batch", _create(good), _create(bad), _get("Task/unknown-2"), _put("Task/x", {"a": 1})
    )
    response = api.post("/", json=bundle)
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "400 Bad Request"]
    outcome = body["entry"][1]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert _total(api, search) == 1


def test_a_batch_runs_a_conditional_create(api: httpx.Client) -> None:
    body, search = _identified()
    entry = _create(body, ifNoneExist=search)
    answered = api.post("/", json=_bundle("batch", entry, entry)).json()["entry"]
    assert [e["response"]["status"] for e in answered] == ["201 Created", "200 OK"]
    assert _total(api, search) == 1


def test_a_batch_entry_cannot_reference_another_entry(api: httpx.Client) -> None:
    urn = _urn()
    child = {**SEED_CREATE, "partOf": [{"reference": urn}]}
    answered = api.post("/", json=_bundle("batch", _create(SEED_CREATE, urn), _create(child)))
    statuses = [e["response"]["status"] for e in answered.json()["entry"]]
    assert statuses == ["201 Created", "400 Bad Request"]


def test_a_batch_runs_a_conditional_update(api: httpx.Client) -> None:
    body, search = _identified()
    entry = _put(f"Task?{search}", body)
    answered = api.post("/", json=_bundle("batch", entry, entry)).json()["entry"]
    assert [e["response"]["status"] for e in answered] == ["201 Created", "200 OK"]
    assert answered[1]["response"]["etag"] == 'W/"2"'
    assert _total(api, search) == 1


def test_an_empty_batch_is_an_empty_batch_response(api: httpx.Client) -> None:
    response = api.post("/", json={"resourceType": "Bundle", "type": "batch"})
    assert response.status_code == 200
    assert response.json() == {"resourceType": "Bundle", "type": "batch-response", "entry": []}


# --- limits, refusals, scopes --------------------------------------------------------------


def test_more_entries_than_the_limit_is_413_saying_the_limit(api: httpx.Client) -> None:
    entries = [_get("Task/x")] * 1001
    response = api.post("/", json=_bundle("batch", *entries))
    assert response.status_code == 413
    text = response.json()["issue"][0]["details"]["text"]
    assert "at most 1000" in text


def test_a_configured_entry_limit_is_kept(make_server) -> None:  # type: ignore[no-untyped-def]
    small: Server = make_server(env={"CARETASK_MAX_BUNDLE_ENTRIES": "2"})
    with small.client(small.token()) as client:
        three = _bundle("batch", *[_get("Task/x")] * 3)
        assert client.post("/", json=three).status_code == 413
        two = _bundle("batch", *[_get("Task/x")] * 2)
        assert client.post("/", json=two).status_code == 200


def test_the_bundle_body_limit_and_each_entrys_body_limit_are_kept(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    small: Server = make_server(
        env={"CARETASK_MAX_BUNDLE_BYTES": "20000", "CARETASK_MAX_BODY_BYTES": "3000"}
    )
    padded = {**SEED_CREATE, "description": "x" * 4000}
    with small.client(small.token()) as client:
        too_big = client.post("/", json=_bundle("batch", *[_create(SEED_CREATE)] * 40))
        assert too_big.status_code == 413
        assert "20000 bytes" in too_big.json()["issue"][0]["details"]["text"]
        entry = client.post("/", json=_bundle("batch", _create(SEED_CREATE), _create(padded)))
        statuses = [e["response"]["status"] for e in entry.json()["entry"]]
        assert statuses == ["201 Created", "413 Content Too Large"]


@pytest.mark.parametrize(
    "bundle",
    [
        {"resourceType": "Task"},
        {"resourceType": "Bundle", "type": "searchset"},
        {"resourceType": "Bundle", "type": "collection"},
        {"resourceType": "Bundle"},
        {"resourceType": "Bundle", "type": "transaction", "entry": {}},
        [],
    ],
)
def test_what_is_not_a_batch_or_transaction_is_400(api: httpx.Client, bundle: Any) -> None:
    response = api.post("/", json=bundle)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "request_",
    [
        {"method": "GET", "url": "Task/../metadata"},
        {"method": "GET", "url": "Patient/1"},
        {"method": "GET", "url": "https://other.example/fhir/Task/1"},
        {"method": "POST", "url": "Task/abc"},
        {"method": "PUT", "url": "Task"},
        {"method": "TRACE", "url": "Task"},
        {"method": "GET"},
    ],
)
def test_an_entry_with_a_url_this_server_does_not_serve_is_400(
    api: httpx.Client, request_: dict[str, str]
) -> None:
    batch = api.post("/", json=_bundle("batch", {"request": request_}))
    assert batch.json()["entry"][0]["response"]["status"] == "400 Bad Request"
    whole = api.post("/", json=_bundle("transaction", {"request": request_}))
    assert whole.status_code == 400
    assert whole.json()["issue"][0]["expression"][0].startswith("Bundle.entry[0]")


def test_an_entry_with_an_absolute_url_of_this_server_is_served(
    server: Server, api: httpx.Client
) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    entry = _get(f"{server.url}/Task/{task_id}")
    answered = api.post("/", json=_bundle("batch", entry)).json()["entry"][0]
    assert answered["response"]["status"] == "200 OK"


def _delete(url: str, **request: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": url, **request}}


def _fhirpath_patch(url: str, path: str, value: str, **request: str) -> dict[str, Any]:
    parts = [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": path},
        {"name": "value", "valueCode": value},
    ]
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}
    return {"resource": patch, "request": {"method": "PATCH", "url": url, **request}}


def _json_patch(url: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(operations).encode()).decode()
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}
    return {"resource": binary, "request": {"method": "PATCH", "url": url}}


def test_a_delete_entry_deletes_the_task(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    answered = api.post("/", json=_bundle("batch", _delete(f"Task/{task_id}"))).json()["entry"]
    assert answered[0]["response"]["status"] == "204 No Content"
    assert answered[0]["response"]["etag"] == 'W/"2"'
    assert api.get(f"/Task/{task_id}").status_code == 410


def test_a_conditional_delete_entry_deletes_the_one_match(api: httpx.Client) -> None:
    body, search = _identified()
    task_id = _id(api.post("/Task", json=body).headers["location"])
    response = api.post("/", json=_bundle("transaction", _delete(f"Task?{search}")))
    assert response.json()["entry"][0]["response"]["status"] == "204 No Content"
    assert api.get(f"/Task/{task_id}").status_code == 410


def test_a_fhirpath_patch_entry_patches_the_task(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    entry = _fhirpath_patch(f"Task/{task_id}", "Task.status", "completed")
    answered = api.post("/", json=_bundle("transaction", entry)).json()["entry"][0]
    assert answered["response"]["status"] == "200 OK"
    assert answered["response"]["etag"] == 'W/"2"'
    assert api.get(f"/Task/{task_id}").json()["status"] == "completed"


def test_a_json_patch_in_a_binary_entry_patches_the_task(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    entry = _json_patch(
        f"Task/{task_id}", [{"op": "replace", "path": "/status", "value": "cancelled"}]
    )
    answered = api.post("/", json=_bundle("batch", entry)).json()["entry"][0]
    assert answered["response"]["status"] == "200 OK"
    assert api.get(f"/Task/{task_id}").json()["status"] == "cancelled"


def test_a_patch_entry_of_another_resource_type_is_400(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    entry = {"resource": SEED_CREATE, "request": {"method": "PATCH", "url": f"Task/{task_id}"}}
    answered = api.post("/", json=_bundle("batch", entry)).json()["entry"][0]
    assert answered["response"]["status"] == "400 Bad Request"


def test_a_transaction_whose_create_fails_leaves_its_delete_and_patch_undone(
    api: httpx.Client,
) -> None:
    doomed = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    patched = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    response = api.post(
        "/",
        json=_bundle(
            "transaction",
            _delete(f"Task/{doomed}"),
            _fhirpath_patch(f"Task/{patched}", "Task.status", "completed"),
            _fhirpath_patch(f"Task/{patched}x", "Task.status", "completed"),
        ),
    )
    assert response.status_code == 404
    assert response.json()["issue"][0]["expression"][0].startswith("Bundle.entry[2]")
    assert api.get(f"/Task/{doomed}").status_code == 200
    assert api.get(f"/Task/{patched}").json()["meta"]["versionId"] == "1"


def test_a_read_only_token_cannot_delete_through_a_batch(server: Server) -> None:
    with (
        server.client(server.token("system/Task.read")) as reader,
        server.client(server.token()) as writer,
    ):
        task_id = _id(writer.post("/Task", json=SEED_CREATE).headers["location"])
        answered = reader.post("/", json=_bundle("batch", _delete(f"Task/{task_id}"))).json()
        assert answered["entry"][0]["response"]["status"] == "403 Forbidden"
        assert writer.get(f"/Task/{task_id}").status_code == 200


def test_a_read_only_token_cannot_create_through_a_batch(server: Server) -> None:
    body, search = _identified()
    with server.client(server.token("system/Task.read")) as client:
        bundle = _bundle("batch", _create(body), _get(f"Task?{search}"))
        answered = client.post("/", json=bundle).json()["entry"]
    assert answered[0]["response"]["status"] == "403 Forbidden"
    assert answered[1]["response"]["status"] == "200 OK"
    with server.client(server.token()) as client:
        assert _total(client, search) == 0


def test_a_read_only_token_cannot_create_through_a_transaction(server: Server) -> None:
    body, _ = _identified()
    with server.client(server.token("system/Task.read")) as client:
        response = client.post("/", json=_bundle("transaction", _create(body)))
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"


def test_a_bundle_needs_a_token(server: Server) -> None:
    response = httpx.post(f"{server.url}/", json=_bundle("batch"))
    assert response.status_code == 401


# --- both profiles --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fhir_server(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"bundles-fhir-{engine}")
    with (
        engine_database(engine, workdir) as url,
        Server(url, workdir, extra=("--profile", "fhir")) as srv,
    ):
        yield srv


def test_in_the_canvas_profile_written_entries_carry_no_resource_by_default(
    api: httpx.Client,
) -> None:
    entry = api.post("/", json=_bundle("transaction", _create(SEED_CREATE))).json()["entry"][0]
    assert "resource" not in entry


def test_in_the_fhir_profile_written_entries_carry_the_task_by_default(
    fhir_server: Server,
) -> None:
    with fhir_server.client(fhir_server.token()) as client:
        bundle = _bundle("transaction", _create(SEED_CREATE))
        entry = client.post("/", json=bundle).json()["entry"][0]
        assert entry["resource"]["resourceType"] == "Task"
        minimal = client.post("/", json=bundle, headers={"Prefer": "return=minimal"})
        assert "resource" not in minimal.json()["entry"][0]


# --- the audit trail ------------------------------------------------------------------------


def _requests(lines: list[list[str]]) -> list[tuple[str, ...]]:
    """The records of the test's own requests: not the start-up's (capabilities) nor the
    token's (login)."""
    return [line for line in what(lines) if line[1] not in ("capabilities", "login")]


def test_the_audit_trail_records_the_bundle_and_each_entry(
    make_server,  # type: ignore[no-untyped-def]
    fresh_database: str,
) -> None:
    audited: Server = make_server(database=fresh_database, env=FAST_FLUSH)
    with audited.client(audited.token()) as client:
        task_id = _id(client.post("/Task", json=SEED_CREATE).headers["location"])
        body, search = _identified()
        bundle = _bundle(
            "transaction", _get(f"Task/{task_id}"), _create(body), _get(f"Task?{search}")
        )
        answered = client.post("/", json=bundle).json()["entry"]
        batch = _bundle("batch", _get("Task/unknown-3"))
        assert client.post("/", json=batch).status_code == 200
    created = _id(answered[1]["response"]["location"])
    lines = _requests(audit_lines(audited, expect=9))
    assert lines[1:] == [
        ("POST", "transaction", "-", "-", "200"),
        ("GET", "read", f"Task/{task_id}/_history/1", "-", "200"),
        ("POST", "create", f"Task/{created}/_history/1", "-", "201"),
        ("GET", "search-type", "-", "identifier=*", "200"),
        ("POST", "batch", "-", "-", "200"),
        ("GET", "read", "Task/unknown-3", "-", "404"),
    ]


def test_a_failed_transaction_is_recorded_with_its_status_for_every_entry(
    make_server,  # type: ignore[no-untyped-def]
    fresh_database: str,
) -> None:
    audited: Server = make_server(database=fresh_database, env=FAST_FLUSH)
    with audited.client(audited.token()) as client:
        bundle = _bundle("transaction", _create(SEED_CREATE), _put("Task/gone-1", SEED_CREATE))
        assert client.post("/", json=bundle).status_code == 404
    assert _requests(audit_lines(audited, expect=5)) == [
        ("POST", "transaction", "-", "-", "404"),
        ("POST", "create", "-", "-", "404"),
        ("PUT", "update", "Task/gone-1", "-", "404"),
    ]


def test_a_status_only_the_fhir_profile_takes_is_a_422_entry_in_canvas(
    api: httpx.Client, fhir_server: Server
) -> None:
    bundle = _bundle("batch", _create({**SEED_CREATE, "status": "in-progress"}))
    canvas = api.post("/", json=bundle).json()["entry"][0]["response"]
    assert canvas["status"] == "422 Unprocessable Content"
    assert canvas["outcome"]["issue"][0]["code"] == "business-rule"
    with fhir_server.client(fhir_server.token()) as client:
        fhir = client.post("/", json=bundle).json()["entry"][0]["response"]
    assert fhir["status"] == "201 Created"


def test_an_entry_nested_deeper_than_json_encoders_go_is_400_not_500(api: httpx.Client) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(300):
        node["a"] = {}
        node = node["a"]
    body = {**SEED_CREATE, "extension": [{"url": "http://x", "valueString": "y", "x": deep}]}
    batch = api.post("/", json=_bundle("batch", _create(body)))
    assert batch.status_code == 200
    assert batch.json()["entry"][0]["response"]["status"] == "400 Bad Request"


def test_a_transaction_deleting_a_task_then_creating_on_its_identifier_creates_a_new_one(
    api: httpx.Client,
) -> None:
    body, search = _identified()
    old = _id(api.post("/Task", json=body).headers["location"])
    response = api.post(
        "/",
        json=_bundle("transaction", _delete(f"Task/{old}"), _create(body, ifNoneExist=search)),
    )
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["204 No Content", "201 Created"]
    assert _total(api, search) == 1
    assert api.get(f"/Task/{old}").status_code == 410


def test_a_transaction_with_a_vread_of_no_such_version_writes_nothing(
    api: httpx.Client,
) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    body, search = _identified()
    response = api.post(
        "/",
        json=_bundle("transaction", _create(body), _get(f"Task/{task_id}/_history/99")),
    )
    assert response.status_code == 404
    assert response.json()["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert _total(api, search) == 0


def test_a_delete_entry_answers_without_a_resource_even_when_representation_is_asked(
    api: httpx.Client,
) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    response = api.post(
        "/",
        json=_bundle("transaction", _delete(f"Task/{task_id}")),
        headers={"Prefer": "return=representation"},
    )
    entry = response.json()["entry"][0]
    assert entry["response"]["status"] == "204 No Content"
    assert "resource" not in entry


def test_a_json_patch_in_a_binary_repeating_a_key_is_400(api: httpx.Client) -> None:
    task_id = _id(api.post("/Task", json=SEED_CREATE).headers["location"])
    text = b'[{"op": "replace", "path": "/status", "value": "completed", "value": "x"}]'
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(text).decode(),
    }
    entry = {"resource": binary, "request": {"method": "PATCH", "url": f"Task/{task_id}"}}
    answered = api.post("/", json=_bundle("batch", entry)).json()["entry"][0]
    assert answered["response"]["status"] == "400 Bad Request"
    assert api.get(f"/Task/{task_id}").json()["meta"]["versionId"] == "1"
