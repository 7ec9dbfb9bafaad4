"""fhir-kit-client (Node.js) against a real server, through its own API: it finds the token
endpoint itself (smartAuthMetadata), the app posts the client credentials there and sets the
client's bearerToken, then the FHIR calls. The steps are tests/node/fhir_kit_scenario.mjs;
node or its packages missing skips outside CI."""

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


def fhir_kit(interop: Interop, action: str, **payload: Any) -> dict[str, Any]:
    return node_client("fhir_kit_scenario.mjs", interop, action, **payload)


def test_fhir_kit_client_finds_the_token_endpoint_and_searches(any_profile: Interop) -> None:
    assert fhir_kit(any_profile, "login") == {
        "tokenUrl": f"{any_profile.url}/auth/token/",
        "bundleType": "searchset",
    }


def test_fhir_kit_client_create_returns_id_and_version(any_profile: Interop) -> None:
    created = fhir_kit(any_profile, "create", task=distinct_task().body)
    assert created["id"], f"create returned no id: the 201 had no body ({created})"
    assert created["versionId"] == "1"


def test_fhir_kit_client_read_returns_the_task(any_profile: Interop) -> None:
    task_id = any_profile.seed(distinct_task().body)
    assert fhir_kit(any_profile, "read", id=task_id) == {
        "id": task_id,
        "versionId": "1",
        "status": "requested",
    }


@pytest.mark.parametrize("parameter", SEED_PARAMETERS)
def test_fhir_kit_client_searches_by_each_seed_parameter(
    any_profile: Interop, parameter: str
) -> None:
    tasks = distinct_task()
    task_id = any_profile.seed(tasks.body)
    found = fhir_kit(any_profile, "search", query=tasks.query(parameter, task_id))
    assert found == {"ids": [task_id]}


def test_fhir_kit_client_next_page_walks_every_page(any_profile: Interop) -> None:
    patient = new_patient()
    ids = any_profile.seed_many(patient_tasks(patient, PAGED_TASKS))
    pages = fhir_kit(any_profile, "pages", query={"patient": patient, "_count": str(PAGE_SIZE)})[
        "pages"
    ]
    assert [len(page) for page in pages] == [10, 10, 10, 7]
    assert [task_id for page in pages for task_id in page] == ids


def test_fhir_kit_client_update_returns_the_new_version(any_profile: Interop) -> None:
    result = fhir_kit(any_profile, "update", task=distinct_task().body, status="completed")
    assert result["updated"] == {
        "id": result["created"]["id"],
        "versionId": "2",
        "status": "completed",
    }


def test_fhir_kit_client_history_lists_every_version(any_profile: Interop) -> None:
    result = fhir_kit(any_profile, "update", task=distinct_task().body, status="completed")
    history = fhir_kit(any_profile, "history", id=result["created"]["id"])
    assert history == {"type": "history", "versions": ["2", "1"]}
