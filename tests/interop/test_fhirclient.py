"""SMART's fhirclient (FHIRClient and its models) against a real server, through its own API.
fhirclient logs in only by a SMART launch or a signed JWT assertion, so the app takes a token
from /auth/token/ (client credentials) and sets it on the client's HTTP session."""

from __future__ import annotations

import functools

import pytest
from fhirclient.client import FHIRClient
from fhirclient.models.bundle import Bundle
from fhirclient.models.task import Task
from fhirclient.server import FHIRUnauthorizedException

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


def fhirclient_for(interop: Interop, token: str | None = None) -> FHIRClient:
    smart = FHIRClient(settings={"app_id": "caretask-tests", "api_base": f"{interop.url}/"})
    session = smart.server.session
    session.headers.update(
        {"Authorization": f"Bearer {token or interop.token()}", **interop.headers}
    )
    # requests has no session-wide timeout and fhirclient sets none: without one a server
    # that stops answering would hang the run
    session.request = functools.partial(session.request, timeout=REQUEST_TIMEOUT)  # type: ignore[method-assign]
    return smart


def test_fhirclient_with_a_token_from_the_token_endpoint_searches(any_profile: Interop) -> None:
    smart = fhirclient_for(any_profile)
    bundle = next(Task.where(struct={"_count": "1"}).perform_iter(smart.server))
    assert bundle.type == "searchset"


def test_fhirclient_with_a_wrong_token_raises_unauthorized(any_profile: Interop) -> None:
    smart = fhirclient_for(any_profile, token="not-a-token")
    with pytest.raises(FHIRUnauthorizedException):
        next(Task.where(struct={"_count": "1"}).perform_iter(smart.server))


def test_fhirclient_create_returns_the_task_with_id_and_version(any_profile: Interop) -> None:
    smart = fhirclient_for(any_profile)
    returned = Task(distinct_task().body).create(smart.server)
    assert returned is not None, "create answered with no body: the client cannot know the id"
    created = Task(returned)
    assert created.id
    assert created.meta.versionId == "1"


def test_fhirclient_reads_a_task_by_id(any_profile: Interop) -> None:
    tasks = distinct_task()
    task_id = any_profile.seed(tasks.body)
    task = Task.read(task_id, fhirclient_for(any_profile).server)
    assert (task.id, task.meta.versionId, task.description) == (
        task_id,
        "1",
        tasks.body["description"],
    )


@pytest.mark.parametrize("parameter", SEED_PARAMETERS)
def test_fhirclient_searches_by_each_seed_parameter(any_profile: Interop, parameter: str) -> None:
    tasks = distinct_task()
    task_id = any_profile.seed(tasks.body)
    search = Task.where(struct=tasks.query(parameter, task_id))
    found = search.perform_resources_iter(fhirclient_for(any_profile).server)
    assert [task.id for task in found] == [task_id]


def test_fhirclient_perform_iter_follows_absolute_next_links(fhir_profile: Interop) -> None:
    # fhirclient refuses a relative next link ("Invalid URL scheme"), which is the canvas
    # profile's form (the seed's): paging with it needs the fhir profile
    patient = new_patient()
    ids = fhir_profile.seed_many(patient_tasks(patient, PAGED_TASKS))
    search = Task.where(struct={"patient": patient, "_count": str(PAGE_SIZE)})
    pages = [
        [entry.resource.id for entry in bundle.entry or []]
        for bundle in search.perform_iter(fhirclient_for(fhir_profile).server)
    ]
    assert [len(page) for page in pages] == [10, 10, 10, 7]
    assert [task_id for page in pages for task_id in page] == ids


def test_fhirclient_update_returns_the_new_version(any_profile: Interop) -> None:
    server = fhirclient_for(any_profile).server
    task = Task.read(any_profile.seed(distinct_task().body), server)
    task.status = "completed"
    returned = task.update()
    assert returned is not None, "update answered with no body: the copy keeps its old version"
    updated = Task(returned)
    assert (updated.id, updated.meta.versionId, updated.status) == (task.id, "2", "completed")


def test_fhirclient_create_then_update_changes_the_created_task(any_profile: Interop) -> None:
    server = fhirclient_for(any_profile).server
    returned = Task(distinct_task().body).create(server)
    assert returned is not None, "create answered with no body: the client cannot know the id"
    task = Task(returned)
    task.status = "completed"
    task.update(server)
    assert Task.read(task.id, server).meta.versionId == "2"


def test_fhirclient_reads_history_newest_first(any_profile: Interop) -> None:
    server = fhirclient_for(any_profile).server
    task = Task.read(any_profile.seed(distinct_task().body), server)
    task.status = "completed"
    task.update()
    history = Bundle.read_from(f"Task/{task.id}/_history", server)
    assert history.type == "history"
    assert [entry.resource.meta.versionId for entry in history.entry] == ["2", "1"]
