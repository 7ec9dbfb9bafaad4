"""Deep pages and totals stay exact while they are served from remembered anchors and counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.seed import SEED_CREATE
from tests.support.server import Server, run_cli

SIZE = 2_600


@pytest.fixture
def loaded(make_server, fresh_database: str, tmp_path: Path) -> tuple[Server, list[dict[str, Any]]]:  # type: ignore[no-untyped-def]
    source = tmp_path / "demo.ndjson"
    source.write_text(run_cli("demo-data", str(SIZE), "--seed", "5").stdout)
    run_cli("import", str(source), "--database", fresh_database)
    tasks = [json.loads(line) for line in source.read_text().splitlines()]
    return make_server(database=fresh_database), tasks


def _page(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/Task", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_deep_pages_hold_the_same_tasks_as_a_scan_would(
    loaded: tuple[Server, list[dict[str, Any]]],
) -> None:
    srv, tasks = loaded
    offsets = [0, 999, 1000, 1001, 1999, 2000, 2555, 2599, 2600, 5000, 1000]
    with srv.client(srv.token()) as client:
        pages = {offset: _page(client, _offset=offset, _count=50) for offset in offsets}
    for offset, bundle in pages.items():
        assert _ids(bundle) == [t["id"] for t in tasks[offset : offset + 50]], offset
        assert bundle["total"] == SIZE


def test_deep_pages_of_a_filtered_search_are_exact(
    loaded: tuple[Server, list[dict[str, Any]]],
) -> None:
    srv, tasks = loaded
    completed = [t["id"] for t in tasks if t["status"] == "completed"]
    with srv.client(srv.token()) as client:
        pages = [_page(client, status="completed", _offset=o, _count=100) for o in (0, 100, 200)]
    assert [i for page in pages for i in _ids(page)] == completed[:300]
    assert {page["total"] for page in pages} == {len(completed)}


def test_a_write_through_another_server_moves_the_total_at_once(
    loaded: tuple[Server, list[dict[str, Any]]],
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    srv, _ = loaded
    other: Server = make_server(database=srv.database)
    token = srv.token()
    with srv.client(token) as client, other.client(token) as writer:
        before = _page(client, status="requested", _offset=1500, _count=10)
        created = writer.post("/Task", json={**SEED_CREATE, "status": "requested"})
        after = _page(client, status="requested", _offset=1500, _count=10)
        deep = _page(client, _offset=SIZE, _count=10)
    assert created.status_code == 201
    assert after["total"] == before["total"] + 1
    assert _ids(deep) == [created.headers["location"].rsplit("/", 1)[1]]


def test_an_update_that_leaves_a_filter_is_seen_by_the_next_deep_page(
    loaded: tuple[Server, list[dict[str, Any]]],
) -> None:
    srv, tasks = loaded
    with srv.client(srv.token()) as client:
        first = _page(client, status="completed", _offset=1000, _count=1)
        moved = _ids(_page(client, status="completed", _offset=0, _count=1))[0]
        body = next(t for t in tasks if t["id"] == moved)
        assert client.put(f"/Task/{moved}", json={**body, "status": "cancelled"}).status_code == 200
        second = _page(client, status="completed", _offset=1000, _count=1)
    assert second["total"] == first["total"] - 1


def test_a_side_table_search_matching_most_tasks_pages_exactly(
    loaded: tuple[Server, list[dict[str, Any]]],
) -> None:
    srv, tasks = loaded
    every = "urn:caretask:demo|"  # a system-only token: every demo task matches it
    completed = [t["id"] for t in tasks if t["status"] == "completed"]
    with srv.client(srv.token()) as client:
        first = _page(client, identifier=every, _count=100)
        deep = _page(client, identifier=every, _offset=1500, _count=100)
        mixed = _page(client, identifier=every, status="completed", _count=100)
        rare = _page(client, identifier=f"urn:caretask:demo|{tasks[7]['identifier'][0]['value']}")
    assert (first["total"], deep["total"]) == (SIZE, SIZE)
    assert _ids(first) == [t["id"] for t in tasks[:100]]
    assert _ids(deep) == [t["id"] for t in tasks[1500:1600]]
    assert _ids(mixed) == completed[:100]
    assert _ids(rare) == [tasks[7]["id"]]


def test_deep_pages_and_totals_skip_deleted_tasks(
    loaded: tuple[Server, list[dict[str, Any]]],
) -> None:
    srv, tasks = loaded
    gone = {tasks[i]["id"] for i in (5, 999, 1000, 1500, 2599)}
    kept = [t["id"] for t in tasks if t["id"] not in gone]
    offsets = [0, 999, 1000, 1001, 1999, 2000, 2590]
    with srv.client(srv.token()) as client:
        _page(client, _offset=2000, _count=50)  # anchors remembered before the deletes
        for task_id in gone:
            assert client.delete(f"/Task/{task_id}").status_code == 204
        pages = {offset: _page(client, _offset=offset, _count=50) for offset in offsets}
    for offset, bundle in pages.items():
        assert _ids(bundle) == kept[offset : offset + 50], offset
        assert bundle["total"] == SIZE - len(gone)
