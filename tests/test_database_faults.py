"""Faults of the database under a running server: connections the database closed, a database that
refuses connections, a full disk, busy readers. A request that meets one of them gets its answer
or a 503 OperationOutcome with Retry-After, never a 500, and the server recovers by itself when
the fault is gone."""

from __future__ import annotations

import asyncio
import itertools
import os
import string
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from caretask.http.negotiation import FORM
from caretask.storage.base import StorageUnavailable
from caretask.storage.postgresql import PostgreSQLStorage
from tests.support.clients import create_task
from tests.support.databases import POSTGRES_URL, postgres_database
from tests.support.seed import new_patient, seed_task
from tests.support.server import Server, run_cli

# --- PostgreSQL: connections closed by the database's side -------------------------------


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _terminate_backends(url: str) -> int:
    """Close every connection to the server's database from the database's side: the
    same AdminShutdown a restart gives, without restarting the shared cluster."""
    assert POSTGRES_URL
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (_database_name(url),),
        ).fetchall()
    return len(rows)


@contextmanager
def _refusing_connections(url: str) -> Iterator[None]:
    """The database refuses new connections and its open ones are closed: unreachable."""
    assert POSTGRES_URL
    name = sql.Identifier(_database_name(url))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
    try:
        _terminate_backends(url)
        yield
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))


@pytest.fixture
def pg_server(make_server) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    if not POSTGRES_URL:
        pytest.skip("CARETASK_TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    with postgres_database() as url:
        yield make_server(database=url)


def _fill_the_pool(server: Server, token: str, connections: int = 8) -> None:
    """Concurrent requests, so that the pool holds several idle connections afterwards."""
    with ThreadPoolExecutor(connections) as pool, server.client(token) as api:
        list(pool.map(lambda _: api.get("/Task", params={"_count": 50}), range(connections * 4)))


def _every_request_type(
    server: Server, token: str, creds: dict[str, str]
) -> dict[str, Callable[[], httpx.Response]]:
    api = server.client(token)
    task_id = create_task(api, seed_task(for_={"reference": f"Patient/{new_patient()}"}))
    return {
        "read": lambda: api.get(f"/Task/{task_id}"),
        "search": lambda: api.get("/Task", params={"_id": task_id}),
        "create": lambda: api.post("/Task", json=seed_task()),
        "update": lambda: api.put(f"/Task/{task_id}", json={**seed_task(), "id": task_id}),
        "history": lambda: api.get(f"/Task/{task_id}/_history"),
        "token": lambda: httpx.post(
            f"{server.url}/auth/token/", data={"grant_type": "client_credentials", **creds}
        ),
    }


def test_every_request_type_succeeds_at_once_after_the_database_closed_its_connections(
    pg_server: Server,
) -> None:
    creds = pg_server.create_client()
    token = pg_server.token()
    requests = _every_request_type(pg_server, token, creds)
    _fill_the_pool(pg_server, token)
    for name, request in requests.items():
        assert _terminate_backends(pg_server.database) >= 1
        response = request()
        assert response.status_code in (200, 201), (name, response.status_code, response.text)
    assert "Traceback" not in pg_server.log()


def test_concurrent_requests_succeed_after_the_database_closed_its_connections(
    pg_server: Server,
) -> None:
    token = pg_server.token()
    _fill_the_pool(pg_server, token)
    _terminate_backends(pg_server.database)
    with ThreadPoolExecutor(8) as pool, pg_server.client(token) as api:
        statuses = list(pool.map(lambda _: api.get("/Task").status_code, range(32)))
    assert set(statuses) == {200}


def test_the_audit_trail_is_stored_at_once_after_the_database_closed_its_connections(
    pg_server: Server,
) -> None:
    client_id, token = pg_server.login()
    with pg_server.client(token) as api:
        _terminate_backends(pg_server.database)
        assert api.get("/Task", params={"_count": 1}).status_code == 200
        _terminate_backends(pg_server.database)  # the next audit batch meets a closed one
        time.sleep(1.5)  # three flush intervals
    assert "could not store" not in pg_server.log()
    out = run_cli("audit", "--client", client_id, "--database", pg_server.database)
    assert "search-type" in out.stdout


def test_requests_are_503_with_retry_after_while_the_database_refuses_connections(
    pg_server: Server,
) -> None:
    creds = pg_server.create_client()
    token = pg_server.token()
    requests = _every_request_type(pg_server, token, creds)
    _fill_the_pool(pg_server, token)
    time.sleep(1.1)  # past the client cache: authorization reads the client's row too
    with _refusing_connections(pg_server.database):
        for name, request in [*requests.items(), *requests.items()]:
            started = time.monotonic()
            response = request()
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"].startswith("application/fhir+json")
            assert response.json()["issue"][0]["code"] == "transient"
            assert time.monotonic() - started < 2, name
        ready = httpx.get(f"{pg_server.url}/readyz", timeout=10)
        assert ready.status_code == 503
    deadline = time.monotonic() + 15
    for name, request in requests.items():
        while (response := request()).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert response.status_code in (200, 201), (name, response.status_code, response.text)
    assert httpx.get(f"{pg_server.url}/readyz").status_code == 200
    assert "Traceback" not in pg_server.log()


@contextmanager
def _read_only(url: str) -> Iterator[None]:
    """The database accepts no writes (as a hot standby or a full-disk guard would): new
    sessions start read-only, and the open ones are closed so that none is left over."""
    assert POSTGRES_URL
    name = sql.Identifier(_database_name(url))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name)
        )
    _terminate_backends(url)  # the setting applies to new sessions
    try:
        yield
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name)
            )
        _terminate_backends(url)


def test_readiness_is_503_when_the_database_accepts_no_writes(pg_server: Server) -> None:
    with _read_only(pg_server.database):
        ready = httpx.get(f"{pg_server.url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert "accepts no writes" in ready.json()["issue"][0]["details"]["text"]
    assert httpx.get(f"{pg_server.url}/readyz", timeout=10).status_code == 200


def test_writes_are_503_with_retry_after_while_the_database_accepts_no_writes(
    pg_server: Server,
) -> None:
    creds = pg_server.create_client()
    token = pg_server.token()
    requests = _every_request_type(pg_server, token, creds)
    time.sleep(1.1)  # past the client cache: the token request reads the client's row
    with _read_only(pg_server.database):
        for name in ("create", "update"):
            response = requests[name]()
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"].startswith("application/fhir+json")
            outcome = response.json()["issue"][0]
            assert outcome["code"] == "transient"
            assert "accepts no writes" in outcome["details"]["text"], name
        for name in ("read", "search", "history", "token"):  # issuing a token writes nothing
            response = requests[name]()
            assert response.status_code == 200, (name, response.status_code, response.text)
    for name, request in requests.items():
        response = request()
        assert response.status_code in (200, 201), (name, response.status_code, response.text)
    assert "Traceback" not in pg_server.log()


def test_an_update_held_behind_a_row_lock_past_the_time_limit_is_503_with_retry_after(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    if not POSTGRES_URL:
        pytest.skip("CARETASK_TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    with postgres_database() as url:
        srv: Server = make_server(database=url, env={"CARETASK_SEARCH_TIMEOUT": "1"})
        with srv.client(srv.token()) as api:
            task_id = create_task(api, seed_task())
            with psycopg.connect(url) as locker:  # a transaction holding the task's row
                locker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
                started = time.monotonic()
                response = api.put(f"/Task/{task_id}", json={**seed_task(), "id": task_id})
                took = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json()["issue"][0]["code"] == "transient"
            assert took < 3
            update = api.put(f"/Task/{task_id}", json={**seed_task(), "id": task_id})
            assert update.status_code == 200
        assert "Traceback" not in srv.log()


def _connections_to(url: str) -> int:
    assert POSTGRES_URL
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (_database_name(url),)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_request_that_finds_every_pooled_connection_busy_is_503_busy_and_opens_no_more() -> None:
    """Unit level: the pool's wait runs out only while its one connection is held."""
    if not POSTGRES_URL:
        pytest.skip("CARETASK_TEST_POSTGRES_URL is not set: no PostgreSQL to test against")

    async def hold(conn: psycopg.AsyncConnection, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def scenario(url: str) -> None:
        # a search time limit of 0.5 s: a request waits 2.5 s for a pooled connection
        storage = PostgreSQLStorage(url, pool_size=1, search_timeout=0.5)
        try:
            holder = asyncio.create_task(storage._run(lambda conn: hold(conn, 4)))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as busy:
                await storage._run(lambda conn: hold(conn, 0))
            assert 2 < time.monotonic() - started < 3.5
            assert busy.value.text.startswith("the server is busy")
            assert busy.value.retry_after == 1
            # the next request waits for the pool again, on no connection of its own
            waiting = asyncio.create_task(storage._run(lambda conn: hold(conn, 0)))
            await asyncio.sleep(0.5)
            assert await asyncio.to_thread(_connections_to, url) == 1
            await holder
            await waiting
        finally:
            await storage.close()

    with postgres_database() as url:
        asyncio.run(scenario(url))


# --- SQLite: a full disk -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of 8 MiB of its own (a tmpfs), to be filled for real."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system with a ballast file, to its last byte."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            with suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    disk = os.statvfs(folder)
    assert disk.f_bavail == 0
    return ballast


def _assert_503_with_retry_after(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.json()["issue"][0]["code"] == "transient"


def test_writes_are_503_while_the_disk_is_full_and_succeed_once_space_is_freed(
    make_server,  # type: ignore[no-untyped-def]
    small_disk: Path,
) -> None:
    srv: Server = make_server(database=f"sqlite:///{small_disk / 'caretask.db'}")
    patient = new_patient()
    with srv.client(srv.token()) as api:
        task_id = create_task(api, seed_task(for_={"reference": f"Patient/{patient}"}))
        ballast = _fill(small_disk)
        big = seed_task(for_={"reference": f"Patient/{patient}"}, description="x" * 50_000)
        for _ in range(3):
            _assert_503_with_retry_after(api.post("/Task", json=big))
        _assert_503_with_retry_after(api.put(f"/Task/{task_id}", json={**big, "id": task_id}))
        assert api.get(f"/Task/{task_id}").status_code == 200
        assert api.get("/Task", params={"patient": patient}).json()["total"] == 1
        _assert_503_with_retry_after(httpx.get(f"{srv.url}/readyz"))
        ballast.unlink()
        assert api.post("/Task", json=big).status_code == 201
        assert api.put(f"/Task/{task_id}", json={**big, "id": task_id}).status_code == 200
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
        assert api.get("/Task", params={"patient": patient}).json()["total"] == 2
    assert "Traceback" not in srv.log()


def test_a_server_restarted_on_a_full_disk_is_not_ready_and_answers_writes_with_503(
    make_server,  # type: ignore[no-untyped-def]
    small_disk: Path,
) -> None:
    database = f"sqlite:///{small_disk / 'caretask.db'}"
    srv: Server = make_server(database=database)
    token = srv.token()
    with srv.client(token) as api:
        task_id = create_task(api, seed_task())
        ballast = _fill(small_disk)
    srv.stop()
    restarted: Server = make_server(database=database)
    with restarted.client(token) as api:
        _assert_503_with_retry_after(httpx.get(f"{restarted.url}/readyz"))
        big = seed_task(description="x" * 50_000)
        for _ in range(200):  # what the WAL file holds already can still be reused
            response = api.post("/Task", json=big)
            if response.status_code != 201:
                break
        _assert_503_with_retry_after(response)
        assert api.get(f"/Task/{task_id}").status_code == 200
        ballast.unlink()
        assert api.post("/Task", json=seed_task()).status_code == 201
        assert httpx.get(f"{restarted.url}/readyz").status_code == 200
    assert "Traceback" not in restarted.log()


def test_the_wal_is_given_back_to_the_disk_once_writes_pause(
    make_server,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    srv: Server = make_server()
    wal = tmp_path / "caretask.db-wal"
    with srv.client(srv.token()) as api:
        for _ in range(20):
            create_task(api, seed_task(description="x" * 20_000))
        assert wal.stat().st_size > 100_000
        deadline = time.monotonic() + 10
        while wal.stat().st_size > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert wal.stat().st_size == 0


# --- readiness while every reader is busy ---------------------------------------------------


def _slow_search_form() -> str:
    """Sixteen ANDed label:contains of 8 two-letter values each (the most one search may
    hold): a few tenths of a second over a few thousand tasks, all on one reader thread
    (or pooled connection)."""
    pairs = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=2)]
    form = [("label:contains", ",".join(pairs[i * 8 : (i + 1) * 8])) for i in range(16)]
    return urlencode(form)


def test_readiness_answers_within_a_second_while_searches_hold_every_reader(
    make_server,  # type: ignore[no-untyped-def]
    fresh_database: str,
    tmp_path: Path,
) -> None:
    demo = tmp_path / "demo.ndjson"
    demo.write_text(run_cli("demo-data", "3000").stdout)
    run_cli("import", str(demo), "--database", fresh_database)
    # two pooled connections on PostgreSQL, four reader threads on SQLite
    srv: Server = make_server(
        database=fresh_database,
        env={"CARETASK_DB_POOL_SIZE": "2", "CARETASK_SEARCH_TIMEOUT": "300"},
    )
    headers = {"Authorization": f"Bearer {srv.token()}", "Content-Type": FORM}
    body = _slow_search_form()

    async def scenario() -> tuple[float, int, list[int]]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=120) as client:
            searches = [
                asyncio.create_task(client.post("/Task/_search", content=body, headers=headers))
                for _ in range(48)
            ]
            await asyncio.sleep(0.5)  # every reader busy, the rest queued behind them
            started = time.monotonic()
            ready = await client.get("/readyz")
            took = time.monotonic() - started
            return took, ready.status_code, [r.status_code for r in await asyncio.gather(*searches)]

    took, status, searched = asyncio.run(scenario())
    assert status == 200
    assert took < 1.0, f"/readyz took {took:.2f} s"
    assert set(searched) == {200}
