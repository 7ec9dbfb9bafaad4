"""@medplum/core's MedplumClient (Node.js) against a real server, through its own API: its
own client-credentials login (startClientLogin) against /auth/token/, then the FHIR calls.
The steps are tests/node/medplum_scenario.mjs; node or its packages missing skips outside CI."""

from __future__ import annotations

from typing import Any

import pytest

from tests.interop.scenario import (
    PAGE_SIZE,
    PAGED_TASKS,
    SEED_PARAMETERS,
    Interop,
    distinct_task,
    node_client,
    patient_tasks,
)
from tests.support.node import require_node
from tests.support.seed import new_patient


@pytest.fixture(autouse=True)
def _node() -> None:
    require_node()


def medplum(interop: Interop, action: str, **payload: Any) -> dict[str, Any]:
    return node_client("medplum_scenario.mjs", interop, action, **payload)


def test_medplum_start_client_login_authenticates(any_profile: Interop) -> None:
    assert medplum(any_profile, "login") == {"authenticated": True, "token": True}


def test_medplum_create_resource_returns_id_and_version(any_profile: Interop) -> None:
    created = medplum(any_profile, "create", task=distinct_task().body)
    assert created["id"], f"createResource gave no id: the 201 had no body ({created})"
    assert created["versionId"] == "1"


def test_medplum_read_resource_returns_the_task(any_profile: Interop) -> None:
    task_id = any_profile.seed(distinct_task().body)
    assert medplum(any_profile, "read", id=task_id) == {
        "id": task_id,
        "versionId": "1",
        "status": "requested",
    }


@pytest.mark.parametrize("parameter", SEED_PARAMETERS)
def test_medplum_search_resources_by_each_seed_parameter(
    any_profile: Interop, parameter: str
) -> None:
    tasks = distinct_task()
    task_id = any_profile.seed(tasks.body)
    found = medplum(any_profile, "search", query=tasks.query(parameter, task_id))
    assert found == {"ids": [task_id]}


def test_medplum_search_resource_pages_follows_absolute_next_links(
    fhir_profile: Interop,
) -> None:
    # MedplumClient makes a URL of the next link without a base (TypeError: Invalid URL on
    # the canvas profile's relative links): paging with it needs the fhir profile
    patient = new_patient()
    ids = fhir_profile.seed_many(patient_tasks(patient, PAGED_TASKS))
    pages = medplum(fhir_profile, "pages", query={"patient": patient, "_count": str(PAGE_SIZE)})[
        "pages"
    ]
    assert [len(page) for page in pages] == [10, 10, 10, 7]
    assert [task_id for page in pages for task_id in page] == ids


def test_medplum_update_resource_returns_the_new_version(any_profile: Interop) -> None:
    result = medplum(any_profile, "update", task=distinct_task().body, status="completed")
    assert result["updated"] == {
        "id": result["created"]["id"],
        "versionId": "2",
        "status": "completed",
    }


def test_medplum_read_history_lists_every_version(any_profile: Interop) -> None:
    result = medplum(any_profile, "update", task=distinct_task().body, status="completed")
    history = medplum(any_profile, "history", id=result["created"]["id"])
    assert history == {"type": "history", "versions": ["2", "1"]}
