"""Slow clients are cut off (header, body and keep-alive timeouts).

One server with short timeouts (headers 1 s, bodies 1 s, keep-alive 3 s), spoken to over raw
sockets so that the bytes and their timing are exactly the test's.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from caretask.config import Settings
from tests.support.databases import database_url
from tests.support.rawhttp import closed_by_server, connect, read_response
from tests.support.seed import SEED_CREATE
from tests.support.server import Server

HEADER_TIMEOUT, BODY_TIMEOUT, KEEPALIVE_TIMEOUT = 1.0, 1.0, 3
SLACK = 1.0  # scheduling on a shared 2-core machine
FHIR_JSON = "application/fhir+json; charset=utf-8"
GET_METADATA = b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
PARTIAL_HEADERS = b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("timeouts")
    env = {
        "CARETASK_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "CARETASK_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "CARETASK_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
    }
    with Server(database_url("sqlite", workdir), workdir, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def token(slow_server: Server) -> str:
    return slow_server.token()


def _trickle(sock: socket.socket, data: bytes, every: float, limit: float) -> None:
    """Send `data` a byte at a time until the server answers or closes, or `limit` s pass."""
    deadline = time.monotonic() + limit
    for byte in data:
        readable, _, _ = select.select([sock], [], [], every)
        if readable or time.monotonic() > deadline:
            return
        sock.sendall(bytes([byte]))
    select.select([sock], [], [], max(deadline - time.monotonic(), 0))


def _assert_timeout_outcome(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 408
    assert headers["content-type"] == FHIR_JSON
    assert headers["connection"] == "close"
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "timeout"


def _post_headers(token: str, extra: str) -> bytes:
    return (
        "POST /Task HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\n{extra}\r\n"
    ).encode()


def test_the_defaults_are_10_s_for_headers_30_s_for_bodies_and_5_s_keep_alive() -> None:
    settings = Settings(database_url="sqlite:///x.db")
    assert (settings.header_timeout, settings.body_timeout, settings.keepalive_timeout) == (
        10.0,
        30.0,
        5,
    )


def test_the_timeouts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARETASK_HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("CARETASK_BODY_TIMEOUT", "7")
    monkeypatch.setenv("CARETASK_KEEPALIVE_TIMEOUT", "9")
    settings = Settings.from_env()
    assert (settings.header_timeout, settings.body_timeout, settings.keepalive_timeout) == (
        2.5,
        7.0,
        9,
    )
    assert settings.to_env()["CARETASK_HEADER_TIMEOUT"] == "2.5"


def test_headers_trickled_past_the_header_timeout_get_408_and_the_connection_closes(
    slow_server: Server,
) -> None:
    with connect(slow_server) as sock:
        started = time.monotonic()
        _trickle(sock, PARTIAL_HEADERS + b"a" * 100, every=0.1, limit=HEADER_TIMEOUT + SLACK)
        _assert_timeout_outcome(*read_response(sock))
        assert HEADER_TIMEOUT - 0.1 <= time.monotonic() - started < HEADER_TIMEOUT + SLACK
        assert closed_by_server(sock)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    slow_server: Server,
) -> None:
    with connect(slow_server) as sock:
        started = time.monotonic()
        assert closed_by_server(sock)  # no 408: there was no request to answer
        assert HEADER_TIMEOUT - 0.1 <= time.monotonic() - started < HEADER_TIMEOUT + SLACK


def test_headers_that_arrive_in_pieces_within_the_timeout_are_served(
    slow_server: Server,
) -> None:
    with connect(slow_server) as sock:
        for piece in (GET_METADATA[:10], GET_METADATA[10:30], GET_METADATA[30:]):
            sock.sendall(piece)
            time.sleep(0.2)
        assert read_response(sock)[0] == 200


def test_a_second_request_on_a_keep_alive_connection_is_served(slow_server: Server) -> None:
    with connect(slow_server) as sock:
        sock.sendall(GET_METADATA)
        assert read_response(sock)[0] == 200
        time.sleep(0.5)
        sock.sendall(GET_METADATA)
        assert read_response(sock)[0] == 200


def test_an_idle_keep_alive_connection_outlives_the_header_timeout(slow_server: Server) -> None:
    with connect(slow_server) as sock:
        sock.sendall(GET_METADATA)
        assert read_response(sock)[0] == 200
        time.sleep(HEADER_TIMEOUT + 0.5)  # idle, not slow: the keep-alive timeout applies
        sock.sendall(GET_METADATA)
        assert read_response(sock)[0] == 200


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    slow_server: Server,
) -> None:
    with connect(slow_server) as sock:
        sock.sendall(GET_METADATA)
        assert read_response(sock)[0] == 200
        answered = time.monotonic()
        assert closed_by_server(sock)
        assert KEEPALIVE_TIMEOUT - 0.1 <= time.monotonic() - answered < KEEPALIVE_TIMEOUT + SLACK


def test_a_keep_alive_request_trickled_past_the_header_timeout_gets_408(
    slow_server: Server,
) -> None:
    with connect(slow_server) as sock:
        sock.sendall(GET_METADATA)
        assert read_response(sock)[0] == 200
        answered = time.monotonic()  # its headers are due one header timeout from here
        _trickle(sock, PARTIAL_HEADERS + b"a" * 100, every=0.1, limit=HEADER_TIMEOUT + SLACK)
        _assert_timeout_outcome(*read_response(sock))
        assert HEADER_TIMEOUT - 0.1 <= time.monotonic() - answered < HEADER_TIMEOUT + SLACK
        assert closed_by_server(sock)


def test_pipelined_requests_are_all_answered(slow_server: Server) -> None:
    with connect(slow_server) as sock:
        sock.sendall(GET_METADATA * 3)
        assert [read_response(sock)[0] for _ in range(3)] == [200, 200, 200]


def test_a_body_left_unread_cannot_hold_the_connection_past_the_header_timeout(
    slow_server: Server,
) -> None:
    with connect(slow_server) as sock:  # 405: the app answers without reading the body
        sock.sendall(b"POST /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
        assert read_response(sock)[0] == 405
        answered = time.monotonic()
        _trickle(sock, b" " * 1000, every=0.1, limit=HEADER_TIMEOUT + SLACK)
        assert closed_by_server(sock)
        assert HEADER_TIMEOUT - 0.1 <= time.monotonic() - answered < HEADER_TIMEOUT + SLACK


def test_blank_lines_after_a_response_cannot_hold_the_connection_past_the_header_timeout(
    slow_server: Server,
) -> None:
    with connect(slow_server) as sock:  # blank lines before a request are allowed, not owed
        sock.sendall(GET_METADATA)
        assert read_response(sock)[0] == 200
        answered = time.monotonic()
        _trickle(sock, b"\r\n" * 100, every=0.5, limit=HEADER_TIMEOUT + SLACK)
        assert closed_by_server(sock)
        assert HEADER_TIMEOUT - 0.1 <= time.monotonic() - answered < HEADER_TIMEOUT + SLACK


def test_a_body_slower_than_the_body_timeout_gets_a_408_outcome(
    slow_server: Server, token: str
) -> None:
    with connect(slow_server) as sock:
        sock.sendall(_post_headers(token, "Content-Length: 500\r\n") + b'{"resourceType": ')
        started = time.monotonic()
        _assert_timeout_outcome(*read_response(sock))
        assert BODY_TIMEOUT - 0.1 <= time.monotonic() - started < BODY_TIMEOUT + SLACK
        assert closed_by_server(sock)


def test_the_body_timeout_is_a_total_that_trickled_chunks_do_not_extend(
    slow_server: Server, token: str
) -> None:
    with connect(slow_server) as sock:
        sock.sendall(_post_headers(token, "Transfer-Encoding: chunked\r\n"))
        started = time.monotonic()
        chunks = b"".join(b"1\r\n \r\n" for _ in range(100))
        _trickle(sock, chunks, every=0.05, limit=BODY_TIMEOUT + SLACK)
        _assert_timeout_outcome(*read_response(sock))
        assert BODY_TIMEOUT - 0.1 <= time.monotonic() - started < BODY_TIMEOUT + SLACK


def test_a_body_that_arrives_in_pieces_within_the_timeout_is_served(
    slow_server: Server, token: str
) -> None:
    body = json.dumps(SEED_CREATE).encode()
    with connect(slow_server) as sock:
        sock.sendall(_post_headers(token, f"Content-Length: {len(body)}\r\n"))
        for start in range(0, len(body), len(body) // 3 + 1):
            time.sleep(0.2)
            sock.sendall(body[start : start + len(body) // 3 + 1])
        status, headers, _ = read_response(sock)
        assert status == 201
        assert headers.get("connection") != "close"


def test_many_slowloris_connections_do_not_stop_a_normal_client(slow_server: Server) -> None:
    slow = [connect(slow_server) for _ in range(200)]
    try:
        for sock in slow:
            sock.sendall(PARTIAL_HEADERS)
        opened = time.monotonic()
        response = httpx.get(f"{slow_server.url}/metadata", timeout=HEADER_TIMEOUT)
        assert response.status_code == 200
        assert time.monotonic() - opened < HEADER_TIMEOUT  # served while they were all open
        for sock in slow:  # and every one of them is cut off
            sock.settimeout(HEADER_TIMEOUT + SLACK)
            _assert_timeout_outcome(*read_response(sock))
        assert time.monotonic() - opened < HEADER_TIMEOUT + SLACK
        assert httpx.get(f"{slow_server.url}/metadata").status_code == 200
    finally:
        for sock in slow:
            sock.close()
