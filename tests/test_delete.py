"""SPEC 10 (issue 15, item 2): DELETE stores a version that marks the task deleted: reads
answer 410, searches (every form: conditions, totals, counts, _include and _revinclude)
skip it, older versions stay readable, history shows the delete, a PUT brings it back.
Both engines, both profiles."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support.clients import create_task
from tests.support.databases import engine_database
from tests.support.seed import SEED_CREATE, label_input, new_patient, seed_task
from tests.support.server import Server

GROUP = "http://schemas.canvasmedical.com/fhir/extensions/task-group"


@pytest.fixture(scope="module", params=["canvas", "fhir"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def servers(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    one = tmp_path_factory.mktemp(f"delete-canvas-{engine}")
    other = tmp_path_factory.mktemp(f"delete-fhir-{engine}")
    with engine_database(engine, one) as canvas_url, engine_database(engine, other) as fhir_url:
        canvas = Server(canvas_url, one, extra=("--profile", "canvas"))
        fhir = Server(fhir_url, other, env={"CARETASK_PROFILE": "fhir"})
        with canvas, fhir:
            yield {"canvas": canvas, "fhir": fhir}


@pytest.fixture(scope="module")
def either(servers: dict[str, Server], profile: str) -> Iterator[httpx.Client]:
    """A client of the server of each profile in turn."""
    server = servers[profile]
    with server.client(server.token()) as client:
        yield client


def _deleted(api: httpx.Client, body: dict[str, Any] | None = None) -> str:
    """A task created (as `body`, default the seed) and then deleted; its id."""
    task_id = create_task(api, body or SEED_CREATE)
    assert api.delete(f"/Task/{task_id}").status_code == 204
    return task_id


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


# --- the delete itself ------------------------------------------------------------------------


def test_delete_answers_204_with_the_deleted_versions_etag(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    response = either.delete(f"/Task/{task_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["etag"] == 'W/"2"'
    assert "last-modified" in response.headers


def test_deleting_twice_answers_204_both_times_and_stores_one_delete(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    first = either.delete(f"/Task/{task_id}")
    second = either.delete(f"/Task/{task_id}")
    assert (first.status_code, second.status_code) == (204, 204)
    assert first.headers["etag"] == second.headers["etag"] == 'W/"2"'
    history = either.get(f"/Task/{task_id}/_history").json()
    assert history["total"] == 2


def test_delete_of_an_unknown_id_is_404_with_canvas_text(either: httpx.Client) -> None:
    response = either.delete("/Task/no-such-task")
    assert response.status_code == 404
    issue = response.json()["issue"][0]
    assert issue["code"] == "not-found"
    assert issue["details"]["text"] == "Unknown Task resource 'no-such-task'"


def test_delete_with_a_stale_if_match_is_412_and_deletes_nothing(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    either.put(f"/Task/{task_id}", json=SEED_CREATE)
    response = either.delete(f"/Task/{task_id}", headers={"If-Match": 'W/"1"'})
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
    assert either.get(f"/Task/{task_id}").status_code == 200


def test_delete_with_the_current_if_match_deletes(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    response = either.delete(f"/Task/{task_id}", headers={"If-Match": 'W/"1"'})
    assert response.status_code == 204
    assert either.get(f"/Task/{task_id}").status_code == 410


# --- reading a deleted task -------------------------------------------------------------------


def test_read_of_a_deleted_task_is_410_naming_the_deletion(either: httpx.Client) -> None:
    task_id = _deleted(either)
    response = either.get(f"/Task/{task_id}")
    assert response.status_code == 410
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["code"] == "deleted"
    assert issue["details"]["text"] == f"Task '{task_id}' was deleted (version 2 is its deletion)"


def test_earlier_versions_of_a_deleted_task_stay_readable(either: httpx.Client) -> None:
    task_id = _deleted(either)
    response = either.get(f"/Task/{task_id}/_history/1")
    assert response.status_code == 200
    assert response.json()["description"] == SEED_CREATE["description"]
    assert response.headers["etag"] == 'W/"1"'


def test_vread_of_the_deleted_version_is_410(either: httpx.Client) -> None:
    task_id = _deleted(either)
    response = either.get(f"/Task/{task_id}/_history/2")
    assert response.status_code == 410
    assert response.json()["issue"][0]["code"] == "deleted"


def test_history_shows_the_delete_without_a_resource(either: httpx.Client) -> None:
    task_id = _deleted(either)
    history = either.get(f"/Task/{task_id}/_history").json()
    deletion, creation = history["entry"]
    assert "resource" not in deletion
    assert deletion["request"] == {"method": "DELETE", "url": f"Task/{task_id}"}
    assert deletion["response"]["status"] == "204 No Content"
    assert deletion["response"]["etag"] == 'W/"2"'
    assert creation["request"] == {"method": "POST", "url": "Task"}


# --- bringing it back -------------------------------------------------------------------------


def test_a_put_brings_a_deleted_task_back_as_the_next_version(either: httpx.Client) -> None:
    task_id = _deleted(either)
    response = either.put(f"/Task/{task_id}", json=seed_task(status="completed"))
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"3"'
    task = either.get(f"/Task/{task_id}").json()
    assert task["status"] == "completed"
    assert task["meta"]["versionId"] == "3"
    history = either.get(f"/Task/{task_id}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "DELETE", "POST"]
    assert history["entry"][0]["response"]["status"] == "200 OK"


def test_a_task_brought_back_takes_nothing_from_before_its_deletion(
    either: httpx.Client,
) -> None:
    task_id = _deleted(either)
    before = datetime.now(UTC)
    body = seed_task(note=None, extension=None, authoredOn=None)
    assert either.put(f"/Task/{task_id}", json=body).status_code == 200
    task = either.get(f"/Task/{task_id}").json()
    assert "note" not in task  # canvas would otherwise keep the stored notes
    assert not [e for e in task.get("extension", []) if e["url"] == GROUP]
    assert datetime.fromisoformat(task["authoredOn"]) >= before  # as on a create


def test_a_task_brought_back_is_found_by_search_again(either: httpx.Client) -> None:
    patient = new_patient()
    body = seed_task(for_={"reference": f"Patient/{patient}"})
    task_id = _deleted(either, body)
    assert either.get("/Task", params={"patient": patient}).json()["total"] == 0
    either.put(f"/Task/{task_id}", json=body)
    found = either.get("/Task", params={"patient": patient}).json()
    assert _ids(found) == [task_id]


def test_a_task_brought_back_keeps_the_profiles_status_rules(servers: dict[str, Server]) -> None:
    canvas = servers["canvas"]
    with canvas.client(canvas.token()) as api:
        task_id = _deleted(api)
        response = api.put(f"/Task/{task_id}", json=seed_task(status="in-progress"))
        assert response.status_code == 422
        assert api.get(f"/Task/{task_id}").status_code == 410


# --- searches skip deleted tasks ---------------------------------------------------------------

# each matches both tasks of a test, `gone` (deleted) and `kept`; `{…}` filled per test.
# Some need the search's own alive term (no condition excludes a deleted row by itself:
# _id, :not, :missing=true, _lastUpdated, ne dates), the others exclude it by their match.
SEARCHES = [
    "_id={gone},{kept}",
    "_id={gone},{kept}&status:not=completed",
    "_id={gone},{kept}&owner:missing=true",
    "_id={gone},{kept}&_lastUpdated=ge2000-01-01",
    "_id={gone},{kept}&authored-on=ne1999-01-01",
    "_id={gone},{kept}&_total=accurate&_count=1",
    "patient={patient}",
    "patient={patient}&status=requested",
    "patient={patient}&_sort=-authored-on",
    "label={label}",
    "description:contains={word}",
    "description=Call {word}",
    "description:exact=Call {word}",
]


def _pair(api: httpx.Client) -> dict[str, str]:
    patient, word = new_patient(), uuid.uuid4().hex[:12]
    label = f"label-{word}"
    body = seed_task(
        for_={"reference": f"Patient/{patient}"},
        owner=None,
        input=label_input(label),
        description=f"Call {word}",
    )
    gone, kept = create_task(api, body), create_task(api, body)
    assert api.delete(f"/Task/{gone}").status_code == 204
    return {"gone": gone, "kept": kept, "patient": patient, "label": label, "word": word}


@pytest.mark.parametrize("search", SEARCHES)
def test_searches_skip_deleted_tasks(either: httpx.Client, search: str) -> None:
    pair = _pair(either)
    query = search.format(**pair)
    found = either.get(f"/Task?{query}").json()
    assert _ids(found) == [pair["kept"]]
    assert found["total"] == 1


@pytest.mark.parametrize("search", SEARCHES)
def test_counts_skip_deleted_tasks(either: httpx.Client, search: str) -> None:
    pair = _pair(either)
    query = search.format(**pair)
    found = either.get(f"/Task?{query}&_summary=count").json()
    assert found == {"resourceType": "Bundle", "type": "searchset", "total": 1}


def test_the_total_of_every_task_drops_by_one_on_a_delete(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    before = either.get("/Task", params={"_summary": "count"}).json()["total"]
    either.delete(f"/Task/{task_id}")
    after = either.get("/Task", params={"_summary": "count"}).json()["total"]
    assert after == before - 1
    unfiltered = either.get("/Task", params={"_total": "accurate", "_count": "1"}).json()
    assert unfiltered["total"] == after


def test_include_skips_a_deleted_target(either: httpx.Client) -> None:
    gone, kept = create_task(either, SEED_CREATE), create_task(either, SEED_CREATE)
    child = create_task(
        either, seed_task(partOf=[{"reference": f"Task/{gone}"}, {"reference": f"Task/{kept}"}])
    )
    either.delete(f"/Task/{gone}")
    found = either.get("/Task", params={"_id": child, "_include": "Task:part-of"}).json()
    assert _ids(found) == [child]
    assert _ids(found, "include") == [kept]


def test_revinclude_skips_a_deleted_source(either: httpx.Client) -> None:
    parent = create_task(either, SEED_CREATE)
    part = seed_task(partOf=[{"reference": f"Task/{parent}"}])
    gone, kept = create_task(either, part), create_task(either, part)
    either.delete(f"/Task/{gone}")
    found = either.get("/Task", params={"_id": parent, "_revinclude": "Task:part-of"}).json()
    assert _ids(found) == [parent]
    assert _ids(found, "include") == [kept]


# --- scopes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["system/Task.write", "system/Task.d", "system/Task.cruds"])
def test_scopes_that_grant_delete(servers: dict[str, Server], scope: str) -> None:
    server = servers["canvas"]
    with server.client(server.token()) as api:
        task_id = create_task(api, SEED_CREATE)
    with server.client(server.token(scope)) as limited:
        assert limited.delete(f"/Task/{task_id}").status_code == 204


@pytest.mark.parametrize("scope", ["system/Task.read", "system/Task.cru"])
def test_scopes_without_delete_are_403(servers: dict[str, Server], scope: str) -> None:
    server = servers["canvas"]
    with server.client(server.token()) as api:
        task_id = create_task(api, SEED_CREATE)
        with server.client(server.token(scope)) as limited:
            assert limited.delete(f"/Task/{task_id}").status_code == 403
        assert api.get(f"/Task/{task_id}").status_code == 200
