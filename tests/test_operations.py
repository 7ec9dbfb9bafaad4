"""SPEC 8: operating caretask: graceful shutdown, liveness and readiness."""

from __future__ import annotations

import json
import signal
import socket
import time
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.support.databases import POSTGRES_URL, postgres_database
from tests.support.seed import SEED_CREATE, new_patient
from tests.support.server import Server


def _send_half_a_create(srv: Server, token: str, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    head = (
        f"POST /Task HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if len(rest) >= length:
                break
    return data


def test_shutdown_lets_in_flight_requests_finish_and_refuses_new_ones(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    srv: Server = make_server(database=fresh_database)
    token = srv.token()
    patient = new_patient()
    body = json.dumps({**SEED_CREATE, "for": {"reference": f"Patient/{patient}"}}).encode()
    in_flight = [_send_half_a_create(srv, token, body) for _ in range(5)]
    time.sleep(0.3)
    assert srv.process is not None
    srv.process.terminate()
    time.sleep(0.5)
    assert srv.process.poll() is None, "the server quit with requests in flight"
    for sock in in_flight:
        sock.sendall(body[len(body) // 2 :])
    responses = [_read_response(sock) for sock in in_flight]
    for sock in in_flight:
        sock.close()
    assert all(r.startswith(b"HTTP/1.1 201 ") for r in responses), responses
    # uvicorn re-raises the SIGTERM it caught once it has shut down cleanly
    assert srv.process.wait(30) in (0, -signal.SIGTERM)
    restarted: Server = make_server(database=fresh_database)
    with restarted.client(token) as client:
        found = client.get("/Task", params={"patient": patient}).json()
    assert found["total"] == 5


def test_a_stopped_server_accepts_no_new_connections(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server()
    srv.stop()
    try:
        httpx.get(f"{srv.url}/healthz", timeout=2)
    except httpx.TransportError:
        return
    raise AssertionError("a stopped server still answered")


def test_liveness_and_readiness_answer_without_a_token(server: Server) -> None:
    live = httpx.get(f"{server.url}/healthz")
    ready = httpx.get(f"{server.url}/readyz")
    assert (live.status_code, ready.status_code) == (200, 200)
    assert live.headers["cache-control"] == "no-store"


def test_readiness_is_503_and_liveness_200_when_the_database_is_gone(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    if not POSTGRES_URL:
        pytest.skip("CARETASK_TEST_POSTGRES_URL is not set: no PostgreSQL to drop")
    with postgres_database() as url:
        srv: Server = make_server(database=url)
        assert httpx.get(f"{srv.url}/readyz").status_code == 200
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        ready = httpx.get(f"{srv.url}/readyz", timeout=30)
        live = httpx.get(f"{srv.url}/healthz")
    assert ready.status_code == 503
    assert ready.headers["content-type"].startswith("application/fhir+json")
    assert ready.json()["issue"][0]["code"] == "transient"
    assert live.status_code == 200
