"""SPEC 9: the canvas and fhir profiles, each row of its table in both, on both engines;
If-Unmodified-Since and Canvas's error bodies in both; `caretask import` following the
profile as the API does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clients import create_task
from tests.support.databases import engine_database
from tests.support.seed import SEED_CREATE, new_patient, seed_task
from tests.support.server import Server, run_cli

GROUP = "http://schemas.canvasmedical.com/fhir/extensions/task-group"
NOTE = SEED_CREATE["note"][0]


@pytest.fixture(scope="module", params=["canvas", "fhir"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def servers(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """A server of each profile, each on its own database of the engine: canvas named by
    the flag, fhir by the environment variable."""
    one = tmp_path_factory.mktemp(f"canvas-{engine}")
    other = tmp_path_factory.mktemp(f"fhir-{engine}")
    with engine_database(engine, one) as canvas_url, engine_database(engine, other) as fhir_url:
        canvas = Server(canvas_url, one, extra=("--profile", "canvas"))
        fhir = Server(fhir_url, other, env={"CARETASK_PROFILE": "fhir"})
        with canvas, fhir:
            yield {"canvas": canvas, "fhir": fhir}


def _client(server: Server) -> httpx.Client:
    return server.client(server.token())


@pytest.fixture(scope="module")
def canvas(servers: dict[str, Server]) -> Iterator[httpx.Client]:
    with _client(servers["canvas"]) as client:
        yield client


@pytest.fixture(scope="module")
def fhir(servers: dict[str, Server]) -> Iterator[httpx.Client]:
    with _client(servers["fhir"]) as client:
        yield client


@pytest.fixture(scope="module")
def either(servers: dict[str, Server], profile: str) -> Iterator[httpx.Client]:
    """A client of the server of each profile in turn: for what both profiles do."""
    with _client(servers[profile]) as client:
        yield client


def _read(api: httpx.Client, task_id: str) -> dict[str, Any]:
    response = api.get(f"/Task/{task_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _put(api: httpx.Client, task_id: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return api.put(f"/Task/{task_id}", json=body, headers=headers)


def _groups(task: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in task.get("extension", []) if e["url"] == GROUP]


# --- create response ------------------------------------------------------------------------


def test_canvas_create_answers_201_with_an_empty_body(canvas: httpx.Client) -> None:
    response = canvas.post("/Task", json=SEED_CREATE)
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["etag"] == 'W/"1"'


def test_fhir_create_answers_201_with_the_stored_task(fhir: httpx.Client) -> None:
    response = fhir.post("/Task", json=SEED_CREATE)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    task = response.json()
    assert response.headers["location"].endswith(f"/Task/{task['id']}")
    assert task["meta"]["versionId"] == "1"
    assert task["description"] == SEED_CREATE["description"]
    assert task == _read(fhir, task["id"])


def test_fhir_create_with_prefer_return_minimal_has_an_empty_body(fhir: httpx.Client) -> None:
    response = fhir.post("/Task", json=SEED_CREATE, headers={"Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.content == b""


def test_create_with_prefer_return_representation_has_the_task(either: httpx.Client) -> None:
    response = either.post("/Task", json=SEED_CREATE, headers={"Prefer": "return=representation"})
    assert response.status_code == 201
    assert response.json()["id"] == response.headers["location"].rsplit("/", 1)[1]


def _created(api: httpx.Client) -> tuple[str, dict[str, Any]]:
    task_id = api.post("/Task", json=SEED_CREATE).headers["location"].rsplit("/", 1)[1]
    return task_id, _read(api, task_id)


def test_canvas_update_answers_200_with_an_empty_body(canvas: httpx.Client) -> None:
    task_id, task = _created(canvas)
    response = _put(canvas, task_id, {**task, "status": "completed"})
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["etag"] == 'W/"2"'


def test_fhir_update_answers_200_with_the_stored_task(fhir: httpx.Client) -> None:
    task_id, task = _created(fhir)
    response = _put(fhir, task_id, {**task, "status": "completed"})
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    stored = response.json()
    assert stored["meta"]["versionId"] == "2"
    assert stored["status"] == "completed"
    assert stored == _read(fhir, task_id)


def test_fhir_update_with_prefer_return_minimal_has_an_empty_body(fhir: httpx.Client) -> None:
    task_id, task = _created(fhir)
    response = _put(fhir, task_id, {**task, "status": "completed"}, Prefer="return=minimal")
    assert response.status_code == 200
    assert response.content == b""


# --- paging links ---------------------------------------------------------------------------


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle.get("link", [])}


def test_canvas_paging_links_are_relative_as_in_the_seed(canvas: httpx.Client) -> None:
    patient = new_patient()
    for _ in range(5):
        create_task(canvas, seed_task(for_={"reference": f"Patient/{patient}"}))
    bundle = canvas.get("/Task", params={"patient": patient, "_count": 2, "_offset": 2}).json()
    query = f"/Task?patient={patient}&_count=2"
    assert _links(bundle) == {
        "self": f"{query}&_offset=2",
        "first": f"{query}&_offset=0",
        "previous": f"{query}&_offset=0",
        "next": f"{query}&_offset=4",
        "last": f"{query}&_offset=4",
    }


def test_canvas_empty_result_has_no_paging_links(canvas: httpx.Client) -> None:
    bundle = canvas.get("/Task", params={"patient": new_patient()}).json()
    assert bundle["total"] == 0
    assert "link" not in bundle
    assert "entry" not in bundle


def test_fhir_paging_links_are_absolute_with_previous(
    fhir: httpx.Client, servers: dict[str, Server]
) -> None:
    patient = new_patient()
    for _ in range(5):
        create_task(fhir, seed_task(for_={"reference": f"Patient/{patient}"}))
    bundle = fhir.get("/Task", params={"patient": patient, "_count": 2, "_offset": 2}).json()
    query = f"{servers['fhir'].url}/Task?patient={patient}&_count=2"
    assert _links(bundle) == {
        "self": f"{query}&_offset=2",
        "first": f"{query}&_offset=0",
        "previous": f"{query}&_offset=0",
        "next": f"{query}&_offset=4",
        "last": f"{query}&_offset=4",
    }
    followed = fhir.get(_links(bundle)["next"]).json()
    assert len(followed["entry"]) == 1


def test_fhir_empty_result_has_a_self_link(fhir: httpx.Client, servers: dict[str, Server]) -> None:
    patient = new_patient()
    bundle = fhir.get("/Task", params={"patient": patient}).json()
    assert bundle["total"] == 0
    assert _links(bundle)["self"] == (
        f"{servers['fhir'].url}/Task?patient={patient}&_count=10&_offset=0"
    )


def test_fhir_history_links_are_absolute(fhir: httpx.Client, servers: dict[str, Server]) -> None:
    task_id = create_task(fhir, SEED_CREATE)
    bundle = fhir.get(f"/Task/{task_id}/_history").json()
    assert _links(bundle)["self"] == (
        f"{servers['fhir'].url}/Task/{task_id}/_history?_count=10&_offset=0"
    )


# --- update of note -------------------------------------------------------------------------


def test_canvas_update_adds_the_notes_sent_to_the_stored_ones(canvas: httpx.Client) -> None:
    task_id = create_task(canvas, SEED_CREATE)
    added = {"text": "Called, no answer.", "time": "2022-03-21T10:00:00Z"}
    assert _put(canvas, task_id, seed_task(note=[added])).status_code == 200
    assert [n["text"] for n in _read(canvas, task_id)["note"]] == [NOTE["text"], added["text"]]


def test_canvas_update_without_notes_keeps_them(canvas: httpx.Client) -> None:
    task_id = create_task(canvas, SEED_CREATE)
    assert _put(canvas, task_id, seed_task(note=None)).status_code == 200
    assert [n["text"] for n in _read(canvas, task_id)["note"]] == [NOTE["text"]]


def test_canvas_update_resending_a_stored_note_does_not_add_it_twice(
    canvas: httpx.Client,
) -> None:
    task_id = create_task(canvas, SEED_CREATE)
    assert _put(canvas, task_id, SEED_CREATE).status_code == 200
    assert _put(canvas, task_id, SEED_CREATE).status_code == 200
    assert len(_read(canvas, task_id)["note"]) == 1


def test_fhir_update_replaces_the_notes(fhir: httpx.Client) -> None:
    task_id = create_task(fhir, SEED_CREATE)
    added = {"text": "Called, no answer.", "time": "2022-03-21T10:00:00Z"}
    assert _put(fhir, task_id, seed_task(note=[added])).status_code == 200
    assert _read(fhir, task_id)["note"] == [added]


def test_fhir_update_without_notes_removes_them(fhir: httpx.Client) -> None:
    task_id = create_task(fhir, SEED_CREATE)
    assert _put(fhir, task_id, seed_task(note=None)).status_code == 200
    assert "note" not in _read(fhir, task_id)


# --- update that omits the task-group extension or authoredOn ------------------------------


def test_canvas_update_without_task_group_or_authored_on_keeps_them(canvas: httpx.Client) -> None:
    task_id = create_task(canvas, SEED_CREATE)
    assert _put(canvas, task_id, seed_task(extension=None, authoredOn=None)).status_code == 200
    task = _read(canvas, task_id)
    assert [g["valueReference"]["reference"] for g in _groups(task)] == [
        SEED_CREATE["extension"][0]["valueReference"]["reference"]
    ]
    assert task["authoredOn"] == SEED_CREATE["authoredOn"]


def test_fhir_update_without_task_group_removes_it_and_keeps_authored_on(
    fhir: httpx.Client,
) -> None:
    task_id = create_task(fhir, seed_task(authoredOn=None))
    created = _read(fhir, task_id)["authoredOn"]
    assert _put(fhir, task_id, seed_task(extension=None, authoredOn=None)).status_code == 200
    task = _read(fhir, task_id)
    assert _groups(task) == []
    assert task["authoredOn"] == created


# --- update that omits description, owner, restriction, input ------------------------------


def test_update_without_owner_restriction_or_input_removes_them(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    body = seed_task(owner=None, restriction=None, input=None)
    assert _put(either, task_id, body).status_code == 200
    task = _read(either, task_id)
    assert not {"owner", "restriction", "input"} & set(task)


def test_canvas_update_without_description_removes_it(canvas: httpx.Client) -> None:
    task_id = create_task(canvas, SEED_CREATE)
    assert _put(canvas, task_id, seed_task(description=None)).status_code == 200
    assert "description" not in _read(canvas, task_id)


def test_create_without_description_is_400(either: httpx.Client) -> None:
    response = either.post("/Task", json=seed_task(description=None))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Task.description"]


def test_fhir_update_without_description_is_400(fhir: httpx.Client) -> None:
    task_id = create_task(fhir, SEED_CREATE)
    response = _put(fhir, task_id, seed_task(description=None))
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Task.description"]
    assert _read(fhir, task_id)["meta"]["versionId"] == "1"


# --- status ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["requested", "cancelled", "completed"])
def test_canvas_takes_its_three_statuses(canvas: httpx.Client, status: str) -> None:
    assert canvas.post("/Task", json=seed_task(status=status)).status_code == 201


def test_canvas_create_with_another_r4_status_is_422_business_rule(canvas: httpx.Client) -> None:
    response = canvas.post("/Task", json=seed_task(status="in-progress"))
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule"
    assert issue["expression"] == ["Task.status"]
    assert issue["details"]["text"] == (
        "status 'in-progress' is not supported; expected one of: cancelled, completed, requested"
    )


def test_canvas_update_to_another_r4_status_is_422_and_writes_nothing(
    canvas: httpx.Client,
) -> None:
    task_id = create_task(canvas, SEED_CREATE)
    response = _put(canvas, task_id, seed_task(status="on-hold"))
    assert response.status_code == 422
    assert response.json()["issue"][0]["code"] == "business-rule"
    assert _read(canvas, task_id)["meta"]["versionId"] == "1"


@pytest.mark.parametrize("status", ["draft", "in-progress", "on-hold", "entered-in-error"])
def test_fhir_takes_any_r4_status(fhir: httpx.Client, status: str) -> None:
    task_id = create_task(fhir, seed_task(status=status))
    assert _read(fhir, task_id)["status"] == status


def test_a_status_outside_r4_is_400_in_both(either: httpx.Client) -> None:
    response = either.post("/Task", json=seed_task(status="done"))
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "code-invalid"


# --- references in returned Tasks -----------------------------------------------------------


def test_canvas_returns_references_with_their_type(canvas: httpx.Client) -> None:
    task = _read(canvas, create_task(canvas, SEED_CREATE))
    assert task["for"]["type"] == "Patient"
    assert task["requester"]["type"] == "Practitioner"
    assert task["owner"]["type"] == "Practitioner"
    assert task["note"][0]["authorReference"]["type"] == "Practitioner"
    assert _groups(task)[0]["valueReference"]["type"] == "Group"


def test_canvas_search_returns_references_with_their_type(canvas: httpx.Client) -> None:
    patient = new_patient()
    create_task(canvas, seed_task(for_={"reference": f"Patient/{patient}"}))
    bundle = canvas.get("/Task", params={"patient": patient}).json()
    assert bundle["entry"][0]["resource"]["for"] == {
        "reference": f"Patient/{patient}",
        "type": "Patient",
    }


def test_fhir_returns_references_as_stored(fhir: httpx.Client) -> None:
    task = _read(fhir, create_task(fhir, SEED_CREATE))
    for element in ("for", "requester", "owner"):
        assert task[element] == SEED_CREATE[element]
    assert _groups(task)[0] == SEED_CREATE["extension"][0]


# --- _sort ----------------------------------------------------------------------------------


def _sorted_ids(api: httpx.Client, patient: str, sort: str) -> list[str]:
    bundle = api.get("/Task", params={"patient": patient, "_sort": sort}).json()
    return [e["resource"]["id"] for e in bundle["entry"]]


def test_sort_by_due_date_is_sort_by_due_in_both(either: httpx.Client) -> None:
    patient = new_patient()
    for end in ("2024-03-01", "2024-01-01", "2024-02-01"):
        body = seed_task(
            for_={"reference": f"Patient/{patient}"}, restriction={"period": {"end": end}}
        )
        create_task(either, body)
    by_due = _sorted_ids(either, patient, "due")
    assert _sorted_ids(either, patient, "due-date") == by_due
    assert _sorted_ids(either, patient, "-due-date") == by_due[::-1]


def test_sort_by_id_in_both(either: httpx.Client) -> None:
    patient = new_patient()
    created = [create_task(either, seed_task(for_={"reference": f"Patient/{patient}"}))]
    created += [create_task(either, seed_task(for_={"reference": f"Patient/{patient}"}))]
    assert _sorted_ids(either, patient, "_id") == sorted(created)
    assert _sorted_ids(either, patient, "-_id") == sorted(created, reverse=True)


# --- If-Unmodified-Since --------------------------------------------------------------------


def test_if_unmodified_since_before_the_last_change_is_412_and_writes_nothing(
    either: httpx.Client,
) -> None:
    task_id = create_task(either, SEED_CREATE)
    since = formatdate(time.time() - 3600, usegmt=True)
    response = _put(
        either, task_id, seed_task(status="completed"), **{"If-Unmodified-Since": since}
    )
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "conflict"
    assert _read(either, task_id)["meta"]["versionId"] == "1"


def test_if_unmodified_since_the_last_modified_date_succeeds(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    since = either.get(f"/Task/{task_id}").headers["last-modified"]
    response = _put(
        either, task_id, seed_task(status="completed"), **{"If-Unmodified-Since": since}
    )
    assert response.status_code == 200
    again = _put(either, task_id, seed_task(status="cancelled"), **{"If-Unmodified-Since": since})
    assert again.status_code in (200, 412)  # 412 once a later second has begun


@pytest.mark.parametrize(
    "form",
    [
        "%a, %d %b %Y %H:%M:%S GMT",  # IMF-fixdate
        "%A, %d-%b-%y %H:%M:%S GMT",  # obsolete RFC 850
        "%a %b %e %H:%M:%S %Y",  # obsolete asctime
    ],
)
def test_if_unmodified_since_takes_the_three_http_date_forms(
    either: httpx.Client, form: str
) -> None:
    task_id = create_task(either, SEED_CREATE)
    later = time.strftime(form, time.gmtime(time.time() + 3600))
    earlier = time.strftime(form, time.gmtime(time.time() - 3600))
    body = seed_task(status="completed")
    assert _put(either, task_id, body, **{"If-Unmodified-Since": later}).status_code == 200
    assert _put(either, task_id, body, **{"If-Unmodified-Since": earlier}).status_code == 412


@pytest.mark.parametrize(
    "value", ["yesterday", "2024-01-01T00:00:00Z", "Mon, 31 Feb 2024 00:00:00 GMT", "0"]
)
def test_a_malformed_if_unmodified_since_is_400(either: httpx.Client, value: str) -> None:
    task_id = create_task(either, SEED_CREATE)
    response = _put(either, task_id, SEED_CREATE, **{"If-Unmodified-Since": value})
    assert response.status_code == 400
    assert "If-Unmodified-Since" in response.json()["issue"][0]["details"]["text"]
    assert _read(either, task_id)["meta"]["versionId"] == "1"


# --- error bodies ---------------------------------------------------------------------------


def _issue(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert len(body["issue"]) == 1
    issue: dict[str, Any] = body["issue"][0]
    return issue


def test_401_is_canvas_authentication_failed_with_diagnostics(
    servers: dict[str, Server], profile: str
) -> None:
    response = httpx.get(f"{servers[profile].url}/Task")
    assert response.status_code == 401
    assert _issue(response) == {
        "severity": "error",
        "code": "unknown",
        "details": {"text": "Authentication failed"},
        "diagnostics": "an Authorization: Bearer token is required",
    }


def test_403_is_canvas_authorization_failed_with_diagnostics(
    servers: dict[str, Server], profile: str
) -> None:
    server = servers[profile]
    with server.client(server.token("system/Task.read")) as client:
        response = client.post("/Task", json=SEED_CREATE)
    assert response.status_code == 403
    assert _issue(response) == {
        "severity": "error",
        "code": "forbidden",
        "details": {"text": "Authorization failed"},
        "diagnostics": "this needs the scope system/Task.write (or system/Task.c)",
    }


def test_404_is_canvas_unknown_task_resource_with_diagnostics(either: httpx.Client) -> None:
    missing = "3ff6b4a0-e172-490c-b8cd-45bedf156bd8"
    for response in (either.get(f"/Task/{missing}"), _put(either, missing, SEED_CREATE)):
        assert response.status_code == 404
        assert _issue(response) == {
            "severity": "error",
            "code": "not-found",
            "details": {"text": f"Unknown Task resource '{missing}'"},
            "diagnostics": "no Task has this id",
        }


# --- the CapabilityStatement and the OpenAPI document --------------------------------------


def test_capability_statement_names_the_running_profile(
    servers: dict[str, Server], profile: str
) -> None:
    statement = httpx.get(f"{servers[profile].url}/metadata").json()
    assert f"profile {profile} " in statement["implementation"]["description"]


def test_openapi_document_is_true_to_the_running_profile(
    servers: dict[str, Server], profile: str
) -> None:
    document = httpx.get(f"{servers[profile].url}/openapi.json").json()
    created = document["paths"]["/Task"]["post"]["responses"]["201"]["description"]
    statuses = document["components"]["schemas"]["Task"]["properties"]["status"]["enum"]
    link_url = document["components"]["schemas"]["SearchsetBundle"]["properties"]["link"]
    if profile == "canvas":
        assert created.startswith("created (a body only with Prefer: return=representation)")
        assert statuses == ["cancelled", "completed", "requested"]
        assert link_url["items"]["properties"]["url"]["pattern"] == "^/"
    else:
        assert created.startswith("created, with the stored Task")
        assert "in-progress" in statuses
        assert link_url["items"]["properties"]["url"]["pattern"] == "^https?://"
    assert f"profile {profile} " in document["info"]["description"]


# --- the setting ----------------------------------------------------------------------------


def test_serve_refuses_an_unknown_profile_naming_the_allowed_values(tmp_path: Path) -> None:
    flag = run_cli("serve", "--profile", "xml", "--port", "1", cwd=tmp_path, check=False)
    assert flag.returncode == 2
    assert "--profile must be one of canvas, fhir, not 'xml'" in flag.stderr
    env = run_cli("serve", cwd=tmp_path, env={"CARETASK_PROFILE": "xml"}, check=False)
    assert env.returncode != 0
    assert "CARETASK_PROFILE must be one of canvas, fhir, not 'xml'" in env.stderr


# --- caretask import follows the profile ---------------------------------------------------


def _import(database: str, tmp_path: Path, profile: str, *tasks: dict[str, Any]) -> str:
    source = tmp_path / f"import-{profile}.ndjson"
    source.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    env = {"CARETASK_PROFILE": profile}
    return run_cli("import", str(source), "--database", database, env=env, check=False).stderr


def test_canvas_import_refuses_another_r4_status(fresh_database: str, tmp_path: Path) -> None:
    report = _import(fresh_database, tmp_path, "canvas", seed_task(status="in-progress"))
    assert "line 1: Task.status: status 'in-progress' is not supported" in report
    assert "imported 0 new" in report


def test_fhir_import_takes_any_r4_status(fresh_database: str, tmp_path: Path) -> None:
    report = _import(fresh_database, tmp_path, "fhir", seed_task(status="in-progress"))
    assert "imported 1 new and 0 updated tasks; skipped 0" in report


def test_canvas_import_of_a_known_id_adds_its_notes_as_an_update_does(
    fresh_database: str, tmp_path: Path, make_server: Any
) -> None:
    task_id = "0f5a1b2c-0000-4000-8000-000000000001"
    added = {"text": "Called, no answer.", "time": "2022-03-21T10:00:00Z"}
    _import(fresh_database, tmp_path, "canvas", {**SEED_CREATE, "id": task_id})
    second = {**seed_task(note=[added], extension=None), "id": task_id}
    assert "imported 0 new and 1 updated" in _import(fresh_database, tmp_path, "canvas", second)
    srv: Server = make_server(database=fresh_database)
    with _client(srv) as client:
        task = _read(client, task_id)
    assert [n["text"] for n in task["note"]] == [NOTE["text"], added["text"]]
    assert len(_groups(task)) == 1
