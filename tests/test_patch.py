"""SPEC 10, issue 15: PATCH /Task/<id> with a JSON Patch (RFC 6902) or a FHIRPath Patch (a
Parameters resource), on both engines.

The patch applies to the Task as a client reads it, and its result is validated and stored
exactly like an update: a new version, ETag and Location of the version, If-Match and
If-Unmodified-Since honoured (412), under the task's write lock (no lost update). Refusals
write nothing: 400 for a patch document that is not one, 409 for a JSON Patch `test` that
fails (RFC 5789's conflicting state: a compare-and-swap whose compare failed; 412 stays
HTTP's, for If-Match and If-Unmodified-Since), 422 for a patch that cannot be applied to the
Task or whose result is not an acceptable Task, 415 for another media type. The result is
the whole new state in both profiles: a PATCH does not carry notes over as a canvas PUT does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from tests.support.clients import create_task
from tests.support.databases import engine_database
from tests.support.seed import SEED_CREATE, seed_task
from tests.support.server import Server, run_cli

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
FHIR_JSON = {"Content-Type": "application/fhir+json"}
NOTE = SEED_CREATE["note"][0]
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def json_patch(api: httpx.Client, task_id: str, operations: Any, **headers: str) -> httpx.Response:
    return api.patch(f"/Task/{task_id}", json=operations, headers={**JSON_PATCH, **headers})


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """One FHIRPath Patch operation: `name`, `index`, `source`, `destination` as their
    value[x]; `value` as given (a value[x], or nested `part`s)."""
    listed: list[dict[str, Any]] = [
        {"name": "type", "valueCode": kind},
        {"name": "path", "valueString": path},
    ]
    for name, value in parts.items():
        if name == "name":
            listed.append({"name": "name", "valueString": value})
        elif name in ("index", "source", "destination"):
            listed.append({"name": name, "valueInteger": value})
        else:
            listed.append({"name": name, **value})
    return {"name": "operation", "part": listed}


def fhirpath_patch(
    api: httpx.Client,
    task_id: str,
    *operations: dict[str, Any],
    media: str = "application/fhir+json",
    **headers: str,
) -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": list(operations)}
    return api.patch(f"/Task/{task_id}", json=body, headers={"Content-Type": media, **headers})


def read(api: httpx.Client, task_id: str) -> dict[str, Any]:
    response = api.get(f"/Task/{task_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with an OperationOutcome whose first issue is `code`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code, outcome
    return outcome


def unchanged(api: httpx.Client, task_id: str) -> None:
    """The task is still at version 1: the refused patch wrote nothing."""
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"1"'
    history = api.get(f"/Task/{task_id}/_history").json()
    assert history["total"] == 1


# --- JSON Patch ---------------------------------------------------------------------------


def test_json_patch_replace_answers_200_with_the_new_version_etag_and_location(
    server: Server, api: httpx.Client
) -> None:
    task_id = create_task(api, SEED_CREATE)
    change = [{"op": "replace", "path": "/status", "value": "completed"}]
    response = json_patch(api, task_id, change)
    assert response.status_code == 200
    assert response.content == b""  # canvas: a write answers with an empty body
    assert response.headers["etag"] == 'W/"2"'
    assert response.headers["location"] == f"{server.url}/Task/{task_id}/_history/2"
    assert "last-modified" in response.headers
    task = read(api, task_id)
    assert task["status"] == "completed"
    assert task["meta"]["versionId"] == "2"
    assert task["description"] == SEED_CREATE["description"]


def test_json_patch_version_is_in_the_history_and_the_old_version_is_kept(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    json_patch(api, task_id, [{"op": "replace", "path": "/status", "value": "cancelled"}])
    history = api.get(f"/Task/{task_id}/_history").json()
    assert history["total"] == 2
    assert [e["resource"]["status"] for e in history["entry"]] == ["cancelled", "requested"]
    assert history["entry"][0]["response"]["etag"] == 'W/"2"'
    assert api.get(f"/Task/{task_id}/_history/1").json()["status"] == "requested"


def test_json_patch_add_and_remove_change_only_what_they_name(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = json_patch(
        api,
        task_id,
        [
            {"op": "add", "path": "/priority", "value": "urgent"},
            {"op": "remove", "path": "/owner"},
            {"op": "add", "path": "/note/-", "value": {"text": "Called, no answer"}},
        ],
    )
    assert response.status_code == 200, response.text
    task = read(api, task_id)
    assert task["priority"] == "urgent"
    assert "owner" not in task
    assert [n["text"] for n in task["note"]] == [NOTE["text"], "Called, no answer"]
    assert "time" in task["note"][1]  # a note without a time is stamped, as on update
    assert task["input"] == SEED_CREATE["input"]


def test_json_patch_test_op_that_holds_lets_the_patch_apply(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = json_patch(
        api,
        task_id,
        [
            {"op": "test", "path": "/status", "value": "requested"},
            {"op": "replace", "path": "/status", "value": "completed"},
        ],
    )
    assert response.status_code == 200
    assert read(api, task_id)["status"] == "completed"


def test_json_patch_test_op_that_fails_is_409_conflict_and_writes_nothing(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = json_patch(
        api,
        task_id,
        [
            {"op": "replace", "path": "/description", "value": "changed first"},
            {"op": "test", "path": "/status", "value": "completed"},
            {"op": "replace", "path": "/status", "value": "cancelled"},
        ],
    )
    outcome = refused(response, 409, "conflict")
    assert "test failed" in outcome["issue"][0]["details"]["text"]
    unchanged(api, task_id)
    assert read(api, task_id)["description"] == SEED_CREATE["description"]


def test_json_patch_applies_to_the_task_as_read_permalink_included(api: httpx.Client) -> None:
    """Pointers are computed by clients from what they read: the permalink extension
    comes after the stored ones, and the server regenerates it."""
    task_id = create_task(api, SEED_CREATE)
    permalink = read(api, task_id)["extension"][1]
    response = json_patch(
        api,
        task_id,
        [
            {"op": "test", "path": "/extension/1", "value": permalink},
            {"op": "remove", "path": "/extension/1"},
            {"op": "remove", "path": "/extension/0"},
        ],
    )
    assert response.status_code == 200, response.text
    assert read(api, task_id)["extension"] == [permalink]


def test_a_canvas_patch_stores_references_as_they_were_not_as_shown(
    server: Server, api: httpx.Client
) -> None:
    """The canvas profile shows references with their `type`; a patch of another element
    does not store it."""
    task_id = create_task(api, SEED_CREATE)
    assert read(api, task_id)["requester"]["type"] == "Practitioner"
    change = [{"op": "replace", "path": "/status", "value": "completed"}]
    assert json_patch(api, task_id, change).status_code == 200
    exported = run_cli("export", "--database", server.database, cwd=server.workdir).stdout
    stored = next(t for t in map(json.loads, exported.splitlines()) if t["id"] == task_id)
    assert stored["status"] == "completed"
    assert stored["requester"] == SEED_CREATE["requester"]
    assert stored["note"] == SEED_CREATE["note"]


def test_json_patch_path_that_names_nothing_is_422_and_writes_nothing(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    for operations in (
        [{"op": "remove", "path": "/priority"}],
        [{"op": "replace", "path": "/note/5/text", "value": "x"}],
        [{"op": "add", "path": "/status/x", "value": "x"}],
        [{"op": "move", "from": "/nothing", "path": "/note"}],
    ):
        refused(json_patch(api, task_id, operations), 422, "processing")
    unchanged(api, task_id)


@pytest.mark.parametrize(
    "document",
    [
        {"op": "replace", "path": "/status", "value": "completed"},  # not an array
        [{"op": "frobnicate", "path": "/status"}],
        [{"path": "/status", "value": "completed"}],
        [{"op": "replace", "value": "completed"}],
        [{"op": "replace", "path": "status", "value": "completed"}],  # not a JSON Pointer
        [{"op": "replace", "path": "/status"}],  # no value
        [{"op": "copy", "path": "/note/-"}],  # no from
        ["replace"],
    ],
    ids=[
        "object",
        "unknown-op",
        "no-op",
        "no-path",
        "relative-path",
        "no-value",
        "no-from",
        "string-op",
    ],
)
def test_malformed_json_patch_document_is_400_and_writes_nothing(
    api: httpx.Client, document: Any
) -> None:
    task_id = create_task(api, SEED_CREATE)
    refused(json_patch(api, task_id, document), 400, "structure")
    unchanged(api, task_id)


def test_patch_body_that_is_not_json_is_400(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    for body in (b"", b"[{", b'[{"op": "remove", "path": "/owner", "path": "/for"}]'):
        response = api.patch(f"/Task/{task_id}", content=body, headers=JSON_PATCH)
        refused(response, 400, "structure")
    unchanged(api, task_id)


def test_patch_result_that_is_not_a_valid_task_is_422_naming_each_element(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = json_patch(
        api,
        task_id,
        [
            {"op": "replace", "path": "/status", "value": "bogus"},
            {"op": "remove", "path": "/requester"},
            {"op": "replace", "path": "/for", "value": {"reference": "Practitioner/1"}},
        ],
    )
    assert response.status_code == 422
    issues = {i["expression"][0]: i["code"] for i in response.json()["issue"]}
    assert issues == {
        "Task.status": "code-invalid",
        "Task.requester": "required",
        "Task.for": "invalid",
    }
    unchanged(api, task_id)


def test_canvas_patch_to_a_status_canvas_does_not_support_is_422_business_rule(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = json_patch(api, task_id, [{"op": "replace", "path": "/status", "value": "ready"}])
    outcome = refused(response, 422, "business-rule")
    assert outcome["issue"][0]["expression"] == ["Task.status"]
    unchanged(api, task_id)


def test_patching_the_id_is_422_and_writes_nothing(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    for operations in (
        [{"op": "replace", "path": "/id", "value": "another-id"}],
        [{"op": "remove", "path": "/id"}],
    ):
        outcome = refused(json_patch(api, task_id, operations), 422, "processing")
        assert outcome["issue"][0]["expression"] == ["Task.id"]
    replace_id = operation("replace", "Task.id", value={"valueId": "another-id"})
    refused(fhirpath_patch(api, task_id, replace_id), 422, "processing")
    unchanged(api, task_id)


def test_patching_meta_is_overwritten_by_the_server(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = json_patch(
        api,
        task_id,
        [
            {"op": "replace", "path": "/meta/versionId", "value": "99"},
            {"op": "replace", "path": "/meta/lastUpdated", "value": "2000-01-01T00:00:00Z"},
        ],
    )
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    meta = read(api, task_id)["meta"]
    assert meta["versionId"] == "2"
    assert meta["lastUpdated"] > "2020"


def test_patch_with_current_if_match_succeeds_and_stale_if_match_is_412(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    change = [{"op": "replace", "path": "/status", "value": "completed"}]
    assert json_patch(api, task_id, change, **{"If-Match": 'W/"1"'}).status_code == 200
    again = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    outcome = refused(json_patch(api, task_id, again, **{"If-Match": 'W/"1"'}), 412, "conflict")
    assert (
        'If-Match W/"1" is not the current version (W/"2")'
        in (outcome["issue"][0]["details"]["text"])
    )
    assert read(api, task_id)["status"] == "completed"


def test_patch_with_if_unmodified_since_before_the_last_change_is_412(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    change = [{"op": "replace", "path": "/status", "value": "completed"}]
    long_ago = formatdate(946684800, usegmt=True)  # 2000-01-01
    refused(json_patch(api, task_id, change, **{"If-Unmodified-Since": long_ago}), 412, "conflict")
    unchanged(api, task_id)
    later = formatdate(4102444800, usegmt=True)  # 2100-01-01
    assert json_patch(api, task_id, change, **{"If-Unmodified-Since": later}).status_code == 200


def test_patch_with_malformed_if_match_is_400(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    change = [{"op": "replace", "path": "/status", "value": "completed"}]
    refused(json_patch(api, task_id, change, **{"If-Match": "banana"}), 400, "invalid")


def test_patch_of_an_unknown_task_is_404(api: httpx.Client) -> None:
    change = [{"op": "replace", "path": "/status", "value": "completed"}]
    outcome = refused(json_patch(api, UNKNOWN_ID, change), 404, "not-found")
    assert outcome["issue"][0]["details"]["text"] == f"Unknown Task resource '{UNKNOWN_ID}'"
    refused(json_patch(api, "not%20an%20id", change), 404, "not-found")


@pytest.mark.parametrize(
    "media",
    ["text/plain", "application/merge-patch+json", "application/fhir+xml", "application/xml"],
)
def test_patch_in_another_media_type_is_415(api: httpx.Client, media: str) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = api.patch(
        f"/Task/{task_id}", content=b'{"status": "completed"}', headers={"Content-Type": media}
    )
    refused(response, 415, "not-supported")
    unchanged(api, task_id)


def test_patch_without_a_content_type_is_415(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    refused(api.patch(f"/Task/{task_id}", content=b"[]"), 415, "not-supported")


def test_patch_with_prefer_return_representation_answers_with_the_patched_task(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    change = [{"op": "replace", "path": "/status", "value": "completed"}]
    response = json_patch(api, task_id, change, Prefer="return=representation")
    assert response.status_code == 200
    assert response.json() == read(api, task_id)
    assert response.json()["meta"]["versionId"] == "2"


def test_patches_racing_on_one_version_with_if_match_have_exactly_one_winner(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)

    def patch(writer: int) -> int:
        change = [{"op": "replace", "path": "/description", "value": f"writer {writer}"}]
        return json_patch(api, task_id, change, **{"If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(patch, range(10)))
    assert sorted(statuses) == [200] + [412] * 9
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"2"'


def test_concurrent_patches_without_if_match_lose_no_update(api: httpx.Client) -> None:
    """Each adds a note to the version current under the task's lock: all 12 are kept."""
    task_id = create_task(api, SEED_CREATE)

    def patch(writer: int) -> int:
        change = [{"op": "add", "path": "/note/-", "value": {"text": f"writer {writer}"}}]
        return json_patch(api, task_id, change).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(patch, range(12)))
    assert statuses == [200] * 12
    task = read(api, task_id)
    assert task["meta"]["versionId"] == "13"
    assert sorted(n["text"] for n in task["note"][1:]) == sorted(f"writer {w}" for w in range(12))


def test_a_patch_that_would_grow_the_task_past_the_body_limit_is_422(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    # each copy doubles the notes: 2**25 of them, were it not stopped
    doubling = [{"op": "copy", "from": "/note", "path": "/contained"}] + [
        {"op": "copy", "from": "/contained", "path": "/contained/-"}
    ] * 25
    refused(json_patch(api, task_id, doubling), 422, "too-costly")
    unchanged(api, task_id)


def test_a_patch_that_nests_the_task_too_deeply_is_422(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    nesting = [{"op": "copy", "from": "/note/0", "path": "/note/0/text"}] * 40
    refused(json_patch(api, task_id, nesting), 422, "too-costly")
    unchanged(api, task_id)


def test_a_patch_of_more_than_200_operations_is_400(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    many = [{"op": "test", "path": "/status", "value": "requested"}] * 201
    refused(json_patch(api, task_id, many), 400, "too-costly")


# --- FHIRPath Patch -----------------------------------------------------------------------


def test_fhirpath_add_appends_a_note(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    before = read(api, task_id)["note"]
    note = {"text": "Left a voicemail", "time": "2024-05-01T10:00:00Z"}
    response = fhirpath_patch(
        api, task_id, operation("add", "Task", name="note", value={"valueAnnotation": note})
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == 'W/"2"'
    assert read(api, task_id)["note"] == [*before, note]


def test_fhirpath_add_makes_a_list_for_a_repeating_element_not_there_yet(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, seed_task(note=None))
    note = {"text": "First note", "time": "2024-05-01T10:00:00Z"}
    add = operation("add", "Task", name="note", value={"valueAnnotation": note})
    assert fhirpath_patch(api, task_id, add).status_code == 200
    assert read(api, task_id)["note"] == [note]


def test_fhirpath_replace_changes_the_status(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    replace = operation("replace", "Task.status", value={"valueCode": "completed"})
    assert fhirpath_patch(api, task_id, replace).status_code == 200
    assert read(api, task_id)["status"] == "completed"


def test_fhirpath_delete_removes_the_owner(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    assert fhirpath_patch(api, task_id, operation("delete", "Task.owner")).status_code == 200
    assert "owner" not in read(api, task_id)


def test_fhirpath_delete_of_what_is_not_there_is_no_error(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = fhirpath_patch(api, task_id, operation("delete", "Task.priority"))
    assert response.status_code == 200
    assert "priority" not in read(api, task_id)


def test_fhirpath_delete_of_the_last_item_removes_the_list(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = fhirpath_patch(api, task_id, operation("delete", "Task.note[0]"))
    assert response.status_code == 200
    assert "note" not in read(api, task_id)


def test_fhirpath_insert_puts_a_label_first(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    label = {
        "part": [
            {"name": "type", "valueCodeableConcept": {"text": "label"}},
            {"name": "value", "valueString": "Callback"},
        ]
    }
    response = fhirpath_patch(api, task_id, operation("insert", "Task.input", index=0, value=label))
    assert response.status_code == 200, response.text
    assert read(api, task_id)["input"] == [
        {"type": {"text": "label"}, "valueString": "Callback"},
        *SEED_CREATE["input"],
    ]
    found = api.get("/Task", params={"_id": task_id, "label": "Callback"}).json()
    assert found["total"] == 1  # indexed like any update


def test_fhirpath_move_reorders_the_notes(api: httpx.Client) -> None:
    second = {"text": "Second", "time": "2024-05-01T10:00:00Z"}
    task_id = create_task(api, seed_task(note=[NOTE, second]))
    first = read(api, task_id)["note"][0]
    response = fhirpath_patch(api, task_id, operation("move", "Task.note", source=1, destination=0))
    assert response.status_code == 200, response.text
    assert read(api, task_id)["note"] == [second, first]


def test_fhirpath_replace_of_a_choice_may_change_its_type(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    replace = operation("replace", "Task.input[0].value", value={"valueInteger": 3})
    assert fhirpath_patch(api, task_id, replace).status_code == 200
    assert read(api, task_id)["input"] == [{"type": {"text": "label"}, "valueInteger": 3}]


def test_fhirpath_operations_apply_in_order_and_where_selects(api: httpx.Client) -> None:
    second = {"text": "Second", "time": "2024-05-01T10:00:00Z"}
    task_id = create_task(api, seed_task(note=[NOTE, second]))
    response = fhirpath_patch(
        api,
        task_id,
        operation("delete", "Task.note.where(text = 'Second')"),
        operation("replace", "Task.note.first().text", value={"valueMarkdown": "Rescanned"}),
        operation("replace", "Task.status", value={"valueCode": "completed"}),
    )
    assert response.status_code == 200, response.text
    task = read(api, task_id)
    assert [n["text"] for n in task["note"]] == ["Rescanned"]
    assert task["status"] == "completed"


def test_fhirpath_patch_is_taken_as_application_json_too(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    replace = operation("replace", "Task.status", value={"valueCode": "cancelled"})
    response = fhirpath_patch(api, task_id, replace, media="application/json")
    assert response.status_code == 200
    assert read(api, task_id)["status"] == "cancelled"


@pytest.mark.parametrize(
    ("patch", "why"),
    [
        (operation("replace", "Task.note.text", value={"valueString": "x"}), "two notes"),
        (operation("replace", "Task.priority", value={"valueCode": "urgent"}), "nothing"),
        (operation("delete", "Task.note"), "two notes"),
        (operation("add", "Task", name="status", value={"valueCode": "completed"}), "is there"),
        (operation("insert", "Task.note", index=3, value={"valueAnnotation": {"text": "x"}}), "3"),
        (operation("move", "Task.note", source=0, destination=2), "past the end"),
        (operation("insert", "Task.status", index=0, value={"valueCode": "x"}), "not a list"),
        (operation("replace", "'requested'", value={"valueCode": "x"}), "computed"),
        (operation("delete", "%unknown"), "cannot be evaluated"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_fhirpath_operation_that_cannot_apply_is_422_and_writes_nothing(
    api: httpx.Client, patch: dict[str, Any], why: str
) -> None:
    second = {"text": "Second", "time": "2024-05-01T10:00:00Z"}
    task_id = create_task(api, seed_task(note=[NOTE, second]))
    outcome = refused(fhirpath_patch(api, task_id, patch), 422, "processing")
    assert outcome["issue"][0]["expression"] == ["Parameters.parameter[0]"]
    unchanged(api, task_id)


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Task", "status": "completed"},
        {"resourceType": "Parameters", "parameter": [{"name": "op", "part": []}]},
        {"resourceType": "Parameters", "parameter": [operation("rename", "Task.status")]},
        {"resourceType": "Parameters", "parameter": [operation("replace", "Task.status")]},
        {"resourceType": "Parameters", "parameter": [operation("delete", "Task.(")]},
        {"resourceType": "Parameters", "parameter": [operation("delete", "Task.note[")]},
        {
            "resourceType": "Parameters",
            "parameter": [operation("insert", "Task.note", index=-1, value={"valueString": "x"})],
        },
        {"resourceType": "Parameters", "parameter": [operation("delete", "x" * 501)]},
    ],
    ids=[
        "a-task",
        "not-an-operation",
        "unknown-type",
        "replace-without-value",
        "unclosed-parenthesis",
        "unclosed-bracket",
        "negative-index",
        "path-too-long",
    ],
)
def test_malformed_fhirpath_patch_is_400_and_writes_nothing(
    api: httpx.Client, body: dict[str, Any]
) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = api.patch(f"/Task/{task_id}", json=body, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    unchanged(api, task_id)


def test_fhirpath_patch_whose_result_is_invalid_is_422_with_the_expression(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = fhirpath_patch(api, task_id, operation("delete", "Task.requester"))
    outcome = refused(response, 422, "required")
    assert outcome["issue"][0]["expression"] == ["Task.requester"]
    unchanged(api, task_id)


# --- SMART scopes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        ("system/Task.read", 403),
        ("system/Task.rs", 403),
        ("system/Task.c", 403),
        ("system/Task.write", 200),
        ("system/Task.u", 200),
        ("system/Task.cruds", 200),
    ],
)
def test_patch_needs_the_update_scope(
    server: Server, api: httpx.Client, scope: str, status: int
) -> None:
    task_id = create_task(api, SEED_CREATE)
    with server.client(server.token(scope)) as client:
        change = [{"op": "replace", "path": "/status", "value": "completed"}]
        response = json_patch(client, task_id, change)
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["issue"][0]["code"] == "forbidden"
        unchanged(api, task_id)


def test_patch_without_a_token_is_401(server: Server, api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = httpx.patch(f"{server.url}/Task/{task_id}", json=[], headers=JSON_PATCH)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


# --- both profiles ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profiled(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """A server of each profile, each on its own database of the engine."""
    one = tmp_path_factory.mktemp(f"patch-canvas-{engine}")
    other = tmp_path_factory.mktemp(f"patch-fhir-{engine}")
    with engine_database(engine, one) as canvas_url, engine_database(engine, other) as fhir_url:
        canvas = Server(canvas_url, one, extra=("--profile", "canvas"))
        fhir = Server(fhir_url, other, extra=("--profile", "fhir"))
        with canvas, fhir:
            yield {"canvas": canvas, "fhir": fhir}


@pytest.fixture(scope="module", params=["canvas", "fhir"])
def either(request: pytest.FixtureRequest, profiled: dict[str, Server]) -> Iterator[httpx.Client]:
    server = profiled[request.param]
    with server.client(server.token()) as client:
        yield client


@pytest.fixture(scope="module")
def fhir(profiled: dict[str, Server]) -> Iterator[httpx.Client]:
    server = profiled["fhir"]
    with server.client(server.token()) as client:
        yield client


def test_a_patch_that_removes_a_note_removes_it_in_both_profiles(either: httpx.Client) -> None:
    """A patch's result is the whole new state: canvas's PUT keeps every stored note (each
    note sent is an addition), but a FHIR client that patches a note away means it."""
    second = {"text": "Second", "time": "2024-05-01T10:00:00Z"}
    task_id = create_task(either, seed_task(note=[NOTE, second]))
    assert json_patch(either, task_id, [{"op": "remove", "path": "/note/0"}]).status_code == 200
    assert fhirpath_patch(either, task_id, operation("delete", "Task.note")).status_code == 200
    assert "note" not in read(either, task_id)


def test_a_patch_that_removes_the_task_group_removes_it_in_both_profiles(
    either: httpx.Client,
) -> None:
    task_id = create_task(either, SEED_CREATE)
    response = fhirpath_patch(
        either,
        task_id,
        operation(
            "delete",
            "Task.extension.where("
            "url = 'http://schemas.canvasmedical.com/fhir/extensions/task-group')",
        ),
    )
    assert response.status_code == 200, response.text
    urls = [e["url"] for e in read(either, task_id)["extension"]]
    assert urls == ["http://schemas.canvasmedical.com/fhir/extensions/task-permalink"]


def test_fhir_profile_patch_answers_with_the_patched_task(fhir: httpx.Client) -> None:
    task_id = create_task(fhir, SEED_CREATE)
    change = [{"op": "replace", "path": "/status", "value": "in-progress"}]
    response = json_patch(fhir, task_id, change)
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    assert response.json() == read(fhir, task_id)
    assert response.json()["status"] == "in-progress"  # any R4 status in fhir
    minimal = json_patch(fhir, task_id, change, Prefer="return=minimal")
    assert minimal.status_code == 200
    assert minimal.content == b""
