"""fhirpy's synchronous client (SyncFHIRClient) against a real server, through its own API."""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import AuthorizationError, OperationOutcome

from tests.interop.scenario import (
    PAGE_SIZE,
    PAGED_TASKS,
    REQUEST_TIMEOUT,
    SEED_PARAMETERS,
    Interop,
    distinct_task,
    patient_tasks,
)
from tests.support.seed import new_patient


def fhirpy_client(interop: Interop, token: str | None = None) -> SyncFHIRClient:
    return SyncFHIRClient(
        interop.url,
        authorization=f"Bearer {token or interop.token()}",
        extra_headers=interop.headers,
        requests_config={"timeout": REQUEST_TIMEOUT},
    )


def test_fhirpy_with_a_token_from_the_token_endpoint_searches(any_profile: Interop) -> None:
    assert fhirpy_client(any_profile).resources("Task").limit(1).fetch_raw().type == "searchset"


def test_fhirpy_with_a_wrong_token_raises_authorization_error(any_profile: Interop) -> None:
    with pytest.raises(AuthorizationError):
        fhirpy_client(any_profile, token="not-a-token").resources("Task").fetch()


def test_fhirpy_save_assigns_id_and_version(any_profile: Interop) -> None:
    task = fhirpy_client(any_profile).resource("Task", **distinct_task().body)
    task.save()
    assert task.id
    assert task.meta.versionId == "1"


def test_fhirpy_save_edit_save_updates_the_one_task(any_profile: Interop) -> None:
    client = fhirpy_client(any_profile)
    tasks = distinct_task()
    task = client.resource("Task", **tasks.body)
    task.save()
    task.status = "completed"
    task.save()
    found = client.resources("Task").search(patient=f"Patient/{tasks.patient}").fetch_all()
    assert [(t.id, t.status, t.meta.versionId) for t in found] == [(task.id, "completed", "2")]


def test_fhirpy_reads_a_task_by_reference(any_profile: Interop) -> None:
    tasks = distinct_task()
    task_id = any_profile.seed(tasks.body)
    task = fhirpy_client(any_profile).reference("Task", task_id).to_resource()
    assert (task.id, task.meta.versionId, task.description) == (
        task_id,
        "1",
        tasks.body["description"],
    )


@pytest.mark.parametrize("parameter", SEED_PARAMETERS)
def test_fhirpy_searches_by_each_seed_parameter(any_profile: Interop, parameter: str) -> None:
    tasks = distinct_task()
    task_id = any_profile.seed(tasks.body)
    found = (
        fhirpy_client(any_profile)
        .resources("Task")
        .search(**tasks.query(parameter, task_id))
        .fetch_all()
    )
    assert [task.id for task in found] == [task_id]


def test_fhirpy_fetch_all_follows_next_links_through_every_page(any_profile: Interop) -> None:
    patient = new_patient()
    ids = any_profile.seed_many(patient_tasks(patient, PAGED_TASKS))
    found = (
        fhirpy_client(any_profile)
        .resources("Task")
        .search(patient=patient)
        .limit(PAGE_SIZE)
        .fetch_all()
    )
    assert [task.id for task in found] == ids


def test_fhirpy_update_gives_the_copy_the_new_version(any_profile: Interop) -> None:
    task = fhirpy_client(any_profile).resource("Task", **distinct_task().body)
    task.save()
    task.status = "completed"
    task.update()
    assert (task.meta.versionId, task.status) == ("2", "completed")


def test_fhirpy_reads_history_newest_first(any_profile: Interop) -> None:
    client = fhirpy_client(any_profile)
    task_id = any_profile.seed(distinct_task().body)
    task = client.reference("Task", task_id).to_resource()
    task.status = "completed"
    task.save()
    history = client.reference("Task", task_id).execute("_history", method="get")
    assert history["type"] == "history"
    assert [entry["resource"]["meta"]["versionId"] for entry in history["entry"]] == ["2", "1"]


def test_fhirpy_get_or_create_creates_once_then_finds_the_same_task(any_profile: Interop) -> None:
    client = fhirpy_client(any_profile)
    value = new_patient()
    body = {**distinct_task().body, "identifier": [{"system": "urn:interop", "value": value}]}
    search = client.resources("Task").search(identifier=f"urn:interop|{value}")
    first, created = search.get_or_create(client.resource("Task", **body))
    again, created_again = search.get_or_create(client.resource("Task", **body))
    assert (created, created_again) == (True, False)
    assert [task.id for task in search.fetch_all()] == [first.id]
    assert again.id == first.id


def test_fhirpy_patch_with_a_fhirpath_patch_gives_the_new_version(any_profile: Interop) -> None:
    """fhirpy's `patch` sends its keyword arguments as the JSON body (application/json):
    given a Parameters, that is a FHIRPath Patch."""
    client = fhirpy_client(any_profile)
    task_id = any_profile.seed(distinct_task().body)
    parts = [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Task.status"},
        {"name": "value", "valueCode": "completed"},
    ]
    patched = client.patch(
        "Task",
        task_id,
        resourceType="Parameters",
        parameter=[{"name": "operation", "part": parts}],
    )
    assert (patched["id"], patched["status"], patched["meta"]["versionId"]) == (
        task_id,
        "completed",
        "2",
    )
    task = client.reference("Task", task_id).to_resource()
    assert (task.status, task.meta.versionId) == ("completed", "2")


def test_fhirpy_patch_of_a_partial_task_is_refused_saying_what_a_patch_is(
    any_profile: Interop,
) -> None:
    """A partial Task (JSON Merge Patch, as some servers take) is neither patch format FHIR
    defines: a 400 that names them, and the Task is unchanged."""
    client = fhirpy_client(any_profile)
    task_id = any_profile.seed(distinct_task().body)
    with pytest.raises(OperationOutcome) as refused:
        client.patch("Task", task_id, status="completed")
    assert "FHIRPath Patch is a Parameters resource" in str(refused.value)
    task = client.reference("Task", task_id).to_resource()
    assert (task.status, task.meta.versionId) == ("requested", "1")
