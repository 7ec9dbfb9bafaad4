"""Dense and sparse forms of a condition find the same tasks in the same order.

In-process against a real database (an SQLite file, PostgreSQL) loaded by `caretask
import`; the dense threshold is lowered so that a few thousand tasks exercise both forms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from caretask.domain import search_params
from caretask.storage import open_storage, sql_search
from caretask.storage.dialect import SQLITE
from caretask.storage.urls import DatabaseURL
from tests.support.databases import engine_database
from tests.support.server import run_cli

QUERIES = [
    [("description", "call")],
    [("description", "c")],
    [("description", "c"), ("status", "completed")],
    [("label", "urgent")],
    [("label", "u"), ("_offset", "1000")],
    [("identifier", "urn:caretask:demo|")],
    [("code", "approve,abort")],
    [("description", "re"), ("_sort", "-authored-on")],
    [("due", "ge2022-01-01")],
    [("authored-on", "lt2023"), ("authored-on", "ge2021-06")],
    [("_lastUpdated", "gt2000")],
]


@pytest.fixture(scope="module")
def database(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("forms")
    source = workdir / "demo.ndjson"
    source.write_text(run_cli("demo-data", "2500", "--seed", "9").stdout)
    with engine_database(engine, workdir) as url:
        run_cli("import", str(source), "--database", url)
        yield url


def _search(url: str, pairs: list[tuple[str, str]]) -> tuple[int | None, list[str]]:
    async def run() -> tuple[int | None, list[str]]:
        storage = open_storage(DatabaseURL.parse(url))
        try:
            query = search_params.parse([*pairs, ("_count", "100")])
            result = await storage.search(query)
            return result.total, [t.id for t in result.tasks]
        finally:
            await storage.close()

    return asyncio.run(run())


@pytest.mark.parametrize("pairs", QUERIES, ids=[str(q) for q in QUERIES])
def test_dense_and_sparse_forms_agree(
    database: str, pairs: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sparse = _search(database, pairs)
    monkeypatch.setattr(sql_search, "DENSE_AT", 5)
    dense = _search(database, pairs)
    assert dense == sparse
    assert sparse[0] and sparse[0] > 5  # the query matched enough tasks to be dense


def test_the_dense_form_is_the_one_used_when_many_tasks_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    query = search_params.parse([("description", "c")])
    monkeypatch.setattr(sql_search, "DENSE_AT", 5)
    plan = sql_search.plan_search(query, sql_search.SearchCache(), SQLITE, columns="t.id")
    probe_sql, _ = next(plan)
    assert probe_sql.startswith("SELECT COUNT(*) FROM (SELECT 1 FROM tasks t WHERE")
    page_sql, _ = plan.send([(5,)])
    assert "+t.description_norm" in page_sql
