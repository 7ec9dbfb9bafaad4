"""fhirpy's asynchronous client (AsyncFHIRClient) against a real server, through its own API;
each test runs its own event loop (asyncio.run), so no pytest plugin is needed."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import AuthorizationError

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


def fhirpy_client(interop: Interop, token: str | None = None) -> AsyncFHIRClient:
    return AsyncFHIRClient(
        interop.url,
        authorization=f"Bearer {token or interop.token()}",
        extra_headers=interop.headers,
        aiohttp_config={"timeout": aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)},
    )


def test_fhirpy_async_with_a_token_from_the_token_endpoint_searches(
    any_profile: Interop,
) -> None:
    async def scenario() -> str:
        bundle = await fhirpy_client(any_profile).resources("Task").limit(1).fetch_raw()
        return str(bundle.type)

    assert asyncio.run(scenario()) == "searchset"


def test_fhirpy_async_with_a_wrong_token_raises_authorization_error(
    any_profile: Interop,
) -> None:
    async def scenario() -> None:
        await fhirpy_client(any_profile, token="not-a-token").resources("Task").fetch()

    with pytest.raises(AuthorizationError):
        asyncio.run(scenario())


def test_fhirpy_async_save_assigns_id_and_version(any_profile: Interop) -> None:
    async def scenario() -> tuple[str | None, str | None]:
        task = fhirpy_client(any_profile).resource("Task", **distinct_task().body)
        await task.save()
        return task.id, (task.get("meta") or {}).get("versionId")

    task_id, version = asyncio.run(scenario())
    assert task_id
    assert version == "1"


def test_fhirpy_async_reads_a_task_by_reference(any_profile: Interop) -> None:
    tasks = distinct_task()
    task_id = any_profile.seed(tasks.body)

    async def scenario() -> tuple[str, str, str]:
        task = await fhirpy_client(any_profile).reference("Task", task_id).to_resource()
        return task.id, task.meta.versionId, task.description

    assert asyncio.run(scenario()) == (task_id, "1", tasks.body["description"])


@pytest.mark.parametrize("parameter", SEED_PARAMETERS)
def test_fhirpy_async_searches_by_each_seed_parameter(any_profile: Interop, parameter: str) -> None:
    tasks = distinct_task()
    task_id = any_profile.seed(tasks.body)

    async def scenario() -> list[str]:
        search = fhirpy_client(any_profile).resources("Task")
        found = await search.search(**tasks.query(parameter, task_id)).fetch_all()
        return [task.id for task in found]

    assert asyncio.run(scenario()) == [task_id]


def test_fhirpy_async_iteration_follows_next_links_through_every_page(
    any_profile: Interop,
) -> None:
    patient = new_patient()
    ids = any_profile.seed_many(patient_tasks(patient, PAGED_TASKS))

    async def scenario() -> list[str]:
        search = fhirpy_client(any_profile).resources("Task").search(patient=patient)
        return [task.id async for task in search.limit(PAGE_SIZE)]

    assert asyncio.run(scenario()) == ids


def test_fhirpy_async_update_gives_the_copy_the_new_version(any_profile: Interop) -> None:
    async def scenario() -> tuple[str | None, str | None]:
        task = fhirpy_client(any_profile).resource("Task", **distinct_task().body)
        await task.save()
        task.status = "completed"
        await task.update()
        return (task.get("meta") or {}).get("versionId"), task.status

    assert asyncio.run(scenario()) == ("2", "completed")


def test_fhirpy_async_reads_history_newest_first(any_profile: Interop) -> None:
    task_id = any_profile.seed(distinct_task().body)

    async def scenario() -> tuple[str, list[str]]:
        client = fhirpy_client(any_profile)
        task = await client.reference("Task", task_id).to_resource()
        task.status = "completed"
        await task.save()
        history = await client.reference("Task", task_id).execute("_history", method="get")
        return history["type"], [e["resource"]["meta"]["versionId"] for e in history["entry"]]

    assert asyncio.run(scenario()) == ("history", ["2", "1"])
