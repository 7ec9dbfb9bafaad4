"""An engine opened and used by many callers at once from its first moment (a server that
starts under load) answers each of them: opening its connections happens once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from caretask.domain import task_rules
from caretask.storage import open_storage, schema
from caretask.storage.urls import DatabaseURL
from tests.support.databases import engine_database


@pytest.fixture
def database(engine: str, tmp_path: Path) -> Iterator[str]:
    with engine_database(engine, tmp_path) as url:
        schema.migrate(DatabaseURL.parse(url))
        yield url


def test_concurrent_first_reads_of_a_new_engine_all_answer(database: str) -> None:
    async def main() -> list[object]:
        storage = open_storage(DatabaseURL.parse(database))
        try:
            reads = (storage.read_task(task_rules.new_id()) for _ in range(20))
            return await asyncio.gather(*reads, return_exceptions=True)
        finally:
            await storage.close()

    assert asyncio.run(main()) == [None] * 20
