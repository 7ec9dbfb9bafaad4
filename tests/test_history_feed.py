"""SPEC 10 (issue 15, item 5): history as a change feed. `GET /Task/_history` and
`GET /_history` list every version of every task, deletes included, newest first, with
_since, _at, _count and next links that resume after a page's last entry; the Bundle's
meta.lastUpdated is the instant up to which the feed is complete, the next poll's
_since. A poller that pages from one horizon to the next while clients write never
misses a change nor sees one twice; `caretask export --since` agrees with the feed.
Both engines, both profiles."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from caretask.domain.subsetting import SUBSETTED
from tests.support.clients import create_task
from tests.support.databases import engine_database, fetch_all
from tests.support.seed import SEED_CREATE, seed_task
from tests.support.server import Server, run_cli

FEEDS = ["/Task/_history", "/_history"]


@pytest.fixture(scope="module", params=["canvas", "fhir"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def servers(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    one = tmp_path_factory.mktemp(f"feed-canvas-{engine}")
    other = tmp_path_factory.mktemp(f"feed-fhir-{engine}")
    with engine_database(engine, one) as canvas_url, engine_database(engine, other) as fhir_url:
        canvas = Server(canvas_url, one, extra=("--profile", "canvas"))
        fhir = Server(fhir_url, other, env={"CARETASK_PROFILE": "fhir"})
        with canvas, fhir:
            yield {"canvas": canvas, "fhir": fhir}


@pytest.fixture(scope="module")
def either(servers: dict[str, Server], profile: str) -> Iterator[httpx.Client]:
    server = servers[profile]
    with server.client(server.token()) as client:
        yield client


def _horizon(api: httpx.Client) -> str:
    """The feed's horizon now: what a poller would pass as its next _since."""
    response = api.get("/_history", params={"_count": "0"})
    assert response.status_code == 200
    return str(response.json()["meta"]["lastUpdated"])


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _micros(text: str) -> int:
    moment = _instant(text) - datetime(1970, 1, 1, tzinfo=UTC)
    return (moment.days * 86_400 + moment.seconds) * 1_000_000 + moment.microseconds


def _settle(api: httpx.Client, *task_ids: str) -> None:
    """Wait until the horizon has passed these tasks' latest versions. On PostgreSQL any
    transaction on the database that began before them (the audit trail's flush) holds
    the horizon back while it runs: their changes are then in a later poll, not lost."""
    stamps = []
    for task_id in task_ids:
        history = api.get(f"/Task/{task_id}/_history", params={"_count": "1"}).json()
        stamps.append(_instant(history["entry"][0]["response"]["lastModified"]))
    deadline = time.monotonic() + 10
    while _instant(_horizon(api)) <= max(stamps):
        assert time.monotonic() < deadline, "the feed's horizon did not move past the writes"
        time.sleep(0.02)


def _changes(bundle: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, id, version) of each entry."""
    out = []
    for entry in bundle.get("entry", []):
        task_id = entry["fullUrl"].rsplit("/", 1)[1]
        version = entry["response"]["etag"].removeprefix('W/"').removesuffix('"')
        out.append((entry["request"]["method"], task_id, version))
    return out


def _next(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


def _all_pages(api: httpx.Client, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    pages = [api.get(path, params=params).json()]
    while (url := _next(pages[-1])) is not None:
        # relative (canvas) or absolute (fhir): the client's base is the server's
        split = urlsplit(url)
        pages.append(api.get(f"{split.path}?{split.query}").json())
    return pages


# --- what the feed lists ----------------------------------------------------------------------


@pytest.mark.parametrize("path", FEEDS)
def test_the_feed_lists_every_version_since_newest_first_deletes_included(
    either: httpx.Client, path: str
) -> None:
    since = _horizon(either)
    task_id = create_task(either, SEED_CREATE)
    either.put(f"/Task/{task_id}", json=seed_task(status="completed"))
    either.delete(f"/Task/{task_id}")
    _settle(either, task_id)
    response = either.get(path, params={"_since": since})
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "history"
    assert _changes(bundle) == [
        ("DELETE", task_id, "3"),
        ("PUT", task_id, "2"),
        ("POST", task_id, "1"),
    ]
    delete, update, create = bundle["entry"]
    assert "resource" not in delete
    assert update["resource"]["status"] == "completed"
    assert create["response"]["status"] == "201 Created"


def test_the_type_and_the_system_feeds_are_the_same(either: httpx.Client) -> None:
    since = _horizon(either)
    written = [create_task(either, SEED_CREATE) for _ in range(3)]
    _settle(either, *written)
    first = either.get("/Task/_history", params={"_since": since}).json()
    second = either.get("/_history", params={"_since": since}).json()
    assert _changes(first) == _changes(second)
    assert len(_changes(first)) == 3


def test_meta_last_updated_is_the_next_polls_since(either: httpx.Client) -> None:
    since = _horizon(either)
    before = create_task(either, SEED_CREATE)
    _settle(either, before)
    first = either.get("/_history", params={"_since": since}).json()
    after = create_task(either, SEED_CREATE)
    _settle(either, after)
    second = either.get("/_history", params={"_since": first["meta"]["lastUpdated"]}).json()
    assert [c[1] for c in _changes(first)] == [before]
    assert [c[1] for c in _changes(second)] == [after]


def test_paging_follows_next_links_without_repeats_or_gaps(either: httpx.Client) -> None:
    since = _horizon(either)
    written = [create_task(either, SEED_CREATE) for _ in range(7)]
    _settle(either, *written)
    pages = _all_pages(either, "/Task/_history", {"_since": since, "_count": "3"})
    assert [len(p.get("entry", [])) for p in pages] == [3, 3, 1]
    ids = [c[1] for page in pages for c in _changes(page)]
    assert ids == written[::-1]
    assert len({p["meta"]["lastUpdated"] for p in pages}) == 1  # one horizon for the pages


def test_pages_written_meanwhile_do_not_shift_a_paging_client(either: httpx.Client) -> None:
    since = _horizon(either)
    written = [create_task(either, SEED_CREATE) for _ in range(4)]
    _settle(either, *written)
    first = either.get("/Task/_history", params={"_since": since, "_count": "2"}).json()
    create_task(either, SEED_CREATE)  # newer than the first page's horizon
    url = urlsplit(_next(first) or "")
    second = either.get(f"{url.path}?{url.query}").json()
    ids = [c[1] for page in (first, second) for c in _changes(page)]
    assert ids == written[::-1]
    assert _next(second) is None


def test_canvas_links_are_relative(servers: dict[str, Server]) -> None:
    server = servers["canvas"]
    with server.client(server.token()) as api:
        since = _horizon(api)
        _settle(api, create_task(api, SEED_CREATE), create_task(api, SEED_CREATE))
        bundle = api.get("/Task/_history", params={"_since": since, "_count": "1"}).json()
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"] == f"/Task/_history?_since={since.replace('+', '%2B')}&_count=1"
    assert links["next"].startswith(f"/Task/_history?_since={since.replace('+', '%2B')}&_count=1")
    assert "&_cursor=" in links["next"]


def test_fhir_links_are_absolute(servers: dict[str, Server]) -> None:
    server = servers["fhir"]
    with server.client(server.token()) as api:
        since = _horizon(api)
        _settle(api, create_task(api, SEED_CREATE), create_task(api, SEED_CREATE))
        bundle = api.get("/_history", params={"_since": since, "_count": "1"}).json()
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"].startswith(f"{server.url}/_history?_since=")
    assert links["next"].startswith(f"{server.url}/_history?_since=")


def test_at_lists_the_versions_current_at_that_instant(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    _settle(either, task_id)
    between = _horizon(either)
    either.put(f"/Task/{task_id}", json=seed_task(status="completed"))
    pages = _all_pages(either, "/_history", {"_at": between, "_count": "100"})
    mine = [c for page in pages for c in _changes(page) if c[1] == task_id]
    assert mine == [("POST", task_id, "1")]


def test_at_lists_a_delete_current_at_that_instant(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    either.delete(f"/Task/{task_id}")
    _settle(either, task_id)
    at = _horizon(either)
    pages = _all_pages(either, "/_history", {"_at": at, "_since": at[:4], "_count": "100"})
    mine = [c for page in pages for c in _changes(page) if c[1] == task_id]
    assert mine == [("DELETE", task_id, "2")]


def test_count_zero_answers_the_horizon_and_no_entries(either: httpx.Client) -> None:
    create_task(either, SEED_CREATE)
    bundle = either.get("/Task/_history", params={"_count": "0"}).json()
    assert "entry" not in bundle
    assert _next(bundle) is None
    assert bundle["meta"]["lastUpdated"]


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["_since=yesterday", "_at=2024-13", "_cursor=not-a-cursor", "_count=many", "status=requested"],
)
def test_malformed_or_unknown_parameters_are_400(either: httpx.Client, query: str) -> None:
    response = either.get(f"/Task/_history?{query}")
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unknown_parameters_are_ignored_with_lenient_handling(either: httpx.Client) -> None:
    response = either.get("/_history?status=requested", headers={"Prefer": "handling=lenient"})
    assert response.status_code == 200


def test_a_task_id_history_still_works_beside_the_type_history(either: httpx.Client) -> None:
    task_id = create_task(either, SEED_CREATE)
    response = either.get(f"/Task/{task_id}/_history")
    assert response.status_code == 200
    assert response.json()["total"] == 1


# --- export agrees ----------------------------------------------------------------------------


def test_export_since_lists_what_the_feed_lists_as_current_and_not_deleted(
    servers: dict[str, Server], profile: str
) -> None:
    server = servers[profile]
    with server.client(server.token()) as api:
        since = _horizon(api)
        kept = create_task(api, SEED_CREATE)
        updated = create_task(api, SEED_CREATE)
        api.put(f"/Task/{updated}", json=seed_task(status="completed"))
        deleted = create_task(api, SEED_CREATE)
        api.delete(f"/Task/{deleted}")
        _settle(api, kept, updated, deleted)
        pages = _all_pages(api, "/_history", {"_since": since, "_count": "2"})
    latest: dict[str, tuple[str, str]] = {}
    for page in pages:
        for method, task_id, version in _changes(page):
            latest.setdefault(task_id, (method, version))  # newest first
    from_feed = {(i, v) for i, (m, v) in latest.items() if m != "DELETE"}
    exported = run_cli("export", "--database", server.database, "--since", since).stdout
    from_export = {
        (task["id"], task["meta"]["versionId"]) for task in map(json.loads, exported.splitlines())
    }
    assert from_export == from_feed == {(kept, "1"), (updated, "2")}


# --- concurrency: a poller misses nothing while clients write ---------------------------------


def test_a_poller_sees_every_version_once_while_clients_write(
    make_server,  # type: ignore[no-untyped-def]
    fresh_database: str,
) -> None:
    server: Server = make_server("--workers", "2", database=fresh_database)
    token = server.token()
    stop = threading.Event()

    def write(worker: int) -> int:
        done = 0
        with server.client(token) as api:
            while not stop.is_set():
                task_id = create_task(api, seed_task(description=f"writer {worker}"))
                api.put(f"/Task/{task_id}", json=seed_task(status="completed"))
                if done % 3 == 0:
                    api.delete(f"/Task/{task_id}")
                done += 1
        return done

    seen: list[tuple[str, str]] = []
    with server.client(token) as poller, ThreadPoolExecutor(6) as pool:
        since = _horizon(poller)
        writers = [pool.submit(write, i) for i in range(6)]
        deadline = time.monotonic() + 4
        polls = 0
        last_write: int | None = None  # us; once every writer has answered
        while True:
            pages = _all_pages(poller, "/_history", {"_since": since, "_count": "7"})
            seen += [(c[1], c[2]) for page in pages for c in _changes(page)]
            since = pages[0]["meta"]["lastUpdated"]
            polls += 1
            if last_write is not None and _micros(since) > last_write:
                break  # the horizon has passed every write: nothing more can come
            if last_write is None and time.monotonic() > deadline:
                stop.set()
                assert sum(w.result() for w in writers) > 0  # every write has answered
                last_write = fetch_all(fresh_database, "SELECT MAX(last_updated) FROM tasks")[0][0]
    stored = fetch_all(
        fresh_database,
        "SELECT t.id, v.version_id FROM task_versions v JOIN tasks t ON t.pk = v.task_pk",
    )
    assert polls > 3
    assert len(seen) == len(set(seen))  # never twice
    assert set(seen) == {(task_id, str(version)) for task_id, version in stored}  # never missed


def test_a_task_history_takes_summary_count_and_answers_the_total_alone(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    api.put(f"/Task/{task_id}", json=SEED_CREATE)
    response = api.get(f"/Task/{task_id}/_history", params={"_summary": "count"})
    assert response.status_code == 200
    assert response.json() == {"resourceType": "Bundle", "type": "history", "total": 2}


def test_a_task_history_subsets_each_version_by_elements_and_its_links_keep_them(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    api.put(f"/Task/{task_id}", json=SEED_CREATE)
    page = api.get(f"/Task/{task_id}/_history", params={"_elements": "status", "_count": 1})
    assert page.status_code == 200
    resource = page.json()["entry"][0]["resource"]
    assert "description" not in resource
    assert resource["status"] == SEED_CREATE["status"]
    assert SUBSETTED in resource["meta"]["tag"]
    next_url = next(link["url"] for link in page.json()["link"] if link["relation"] == "next")
    assert "_elements=status" in next_url


def test_the_change_feed_takes_summary_and_elements_but_not_summary_count(
    api: httpx.Client,
) -> None:
    create_task(api, SEED_CREATE)
    page = api.get("/Task/_history", params={"_summary": "true", "_count": 1})
    assert page.status_code == 200
    assert "note" not in page.json()["entry"][0]["resource"]
    refused = api.get("/_history", params={"_summary": "count"})
    assert refused.status_code == 400
    assert "count" in refused.json()["issue"][0]["details"]["text"]


def test_the_change_feeds_need_the_search_scope_as_smart_v2_has_it(server: Server) -> None:
    with server.client(server.token("system/Task.r")) as reader:
        refused = [reader.get(feed).status_code for feed in FEEDS]
    with server.client(server.token("system/Task.s")) as searcher:
        allowed = [searcher.get(feed).status_code for feed in FEEDS]
    assert (refused, allowed) == ([403, 403], [200, 200])


@pytest.mark.parametrize("values", ["1.2.3.4611686018427387903", "-1.-1.-1.-1", "1.2.3", "a.b.c.d"])
def test_a_cursor_this_server_did_not_give_is_400(api: httpx.Client, values: str) -> None:
    cursor = base64.urlsafe_b64encode(values.encode()).decode().rstrip("=")
    response = api.get("/_history", params={"_cursor": cursor})
    assert response.status_code == 400
    assert "_cursor" in response.json()["issue"][0]["details"]["text"]
