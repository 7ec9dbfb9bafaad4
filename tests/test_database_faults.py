"""Faults of the database under a running server (issue 12 items 10, 11, 12): connections
the database closed, a database that refuses connections, a full disk, busy readers.
A request that meets one of them gets its answer or a 503 OperationOutcome with
Retry-After, never a 500, and the server recovers by itself when the fault is gone."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import (
    POSTGRES_URL,
    Server,
    create_task,
    new_patient,
    postgres_database,
    run_cli,
    seed_task,
)

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


def test_readiness_is_503_when_the_database_accepts_no_writes(pg_server: Server) -> None:
    assert POSTGRES_URL
    name = sql.Identifier(_database_name(pg_server.database))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name)
        )
    _terminate_backends(pg_server.database)  # the setting applies to new sessions
    try:
        ready = httpx.get(f"{pg_server.url}/readyz", timeout=10)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name)
            )
        _terminate_backends(pg_server.database)
    assert ready.status_code == 503
    assert "accepts no writes" in ready.json()["issue"][0]["details"]["text"]
    assert httpx.get(f"{pg_server.url}/readyz", timeout=10).status_code == 200
