"""Write programs (storage.base WriteOp): several reads and writes in one transaction, on a
real database of each engine, in-process: all or nothing, each step seeing the ones before
it, identical Serialize keys one after another, and deadlocks between programs run again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from caretask.domain import search_params, task_rules
from caretask.domain.dates import now_instant
from caretask.service.tasks import build_version
from caretask.storage import open_storage, schema
from caretask.storage.base import Current, Find, Insert, Replace, Serialize, Storage, StoredTask
from caretask.storage.urls import DatabaseURL
from tests.support.databases import engine_database
from tests.support.seed import SEED_CREATE, new_patient


@pytest.fixture
def database(engine: str, tmp_path: Path) -> Iterator[str]:
    with engine_database(engine, tmp_path) as url:
        schema.migrate(DatabaseURL.parse(url))
        yield url


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Storage]:
    storage = open_storage(DatabaseURL.parse(url))
    try:
        yield storage
    finally:
        await storage.close()


def _new(patient: str, version: int = 1, task_id: str | None = None) -> tuple[str, Any]:
    task_id = task_id or task_rules.new_id()
    body = task_rules.validate({**SEED_CREATE, "for": {"reference": f"Patient/{patient}"}})
    now, now_us = now_instant()
    return task_id, build_version(
        body, task_id=task_id, version_id=version, now=now, last_updated=now_us
    )


def _patient_query(patient: str) -> search_params.SearchQuery:
    return search_params.parse([("patient", patient), ("_total", "none")])


def run(coroutine_factory: Callable[[], Any]) -> Any:
    return asyncio.run(coroutine_factory())


def test_a_program_that_raises_after_writing_leaves_nothing(database: str) -> None:
    patient = new_patient()

    def program():  # type: ignore[no-untyped-def]
        task_id, new = _new(patient)
        yield Insert(task_id, new)
        raise LookupError("the program gives up")

    async def main() -> int | None:
        async with opened(database) as storage:
            with pytest.raises(LookupError):
                await storage.transact(program)
            return (await storage.search(_patient_query(patient))).total

    assert run(main) in (0, None)


def test_find_sees_what_the_program_wrote_before_it(database: str) -> None:
    patient = new_patient()

    def program():  # type: ignore[no-untyped-def]
        task_id, new = _new(patient)
        yield Insert(task_id, new)
        found: list[StoredTask] = yield Find(_patient_query(patient))
        return task_id, [t.id for t in found]

    async def main() -> tuple[str, list[str]]:
        async with opened(database) as storage:
            return await storage.transact(program)  # type: ignore[no-any-return]

    task_id, found = run(main)
    assert found == [task_id]


def test_replace_after_current_writes_the_next_version(database: str) -> None:
    patient = new_patient()
    task_id, first = _new(patient)

    def program():  # type: ignore[no-untyped-def]
        current: StoredTask = yield Current(task_id)
        _, second = _new(patient, current.version_id + 1, task_id)
        stored: StoredTask = yield Replace(task_id, second)
        again: StoredTask = yield Current(task_id)
        return stored.version_id, again.version_id

    async def main() -> tuple[tuple[int, int], list[int]]:
        async with opened(database) as storage:
            await storage.create_task(task_id, lambda: first)
            versions = await storage.transact(program)
            _, history = await storage.history(task_id, 10, 0)
            return versions, [v.version_id for v in history]

    versions, history = run(main)
    assert versions == (2, 2)
    assert history == [2, 1]


def test_current_of_an_unknown_task_is_none(database: str) -> None:
    def program():  # type: ignore[no-untyped-def]
        return (yield Current(task_rules.new_id()))

    async def main() -> Any:
        async with opened(database) as storage:
            return await storage.transact(program)

    assert run(main) is None


def test_programs_serialized_on_one_key_see_each_others_writes(database: str) -> None:
    patient = new_patient()

    def program():  # type: ignore[no-untyped-def]
        yield Serialize(f"patient={patient}")
        found: list[StoredTask] = yield Find(_patient_query(patient))
        if found:
            return False
        task_id, new = _new(patient)
        yield Insert(task_id, new)
        return True

    async def main() -> list[bool]:
        async with opened(database) as storage:
            return list(await asyncio.gather(*(storage.transact(program) for _ in range(20))))

    assert sorted(run(main)) == [False] * 19 + [True]


def test_programs_that_deadlock_each_run_to_completion(database: str) -> None:
    """Two programs lock the same two tasks in opposite orders: PostgreSQL rolls one back
    (a deadlock), and the engine runs it again; SQLite runs them one after another."""
    patient = new_patient()
    tasks = [_new(patient) for _ in range(2)]

    def program(order: list[int]):  # type: ignore[no-untyped-def]
        def steps():  # type: ignore[no-untyped-def]
            written = []
            for i in order:
                task_id = tasks[i][0]
                current: StoredTask = yield Current(task_id)
                _, new = _new(patient, current.version_id + 1, task_id)
                written.append((yield Replace(task_id, new)).version_id)
            return written

        return steps

    async def main() -> list[Any]:
        async with opened(database) as storage:
            for task_id, new in tasks:
                await storage.create_task(task_id, lambda new=new: new)
            results = []
            for _ in range(5):
                results += await asyncio.gather(
                    storage.transact(program([0, 1])), storage.transact(program([1, 0]))
                )
            return [(await storage.read_task(t[0])).version_id for t in tasks]  # type: ignore[union-attr]

    assert run(main) == [11, 11]
