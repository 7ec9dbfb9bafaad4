"""Huge OR searches. A search is bounded in its values and conditions (400),
in its time (503 with Retry-After), and stops when its client leaves (SPEC 7 and 8: one
client must not be able to stall the server for others)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.databases import engine_database
from tests.support.server import Server, run_cli

FHIR_JSON = "application/fhir+json; charset=utf-8"
DEMO_TASKS = 20_000
# in bounds (16 conditions, 128 values) and slow: two-letter :contains values match no
# label, and no index serves them, so every label row is tested against every value
SLOW_SEARCH = [
    ("label:contains", ",".join(f"q{c}{i}" for i in range(8))) for c in "abcdefghijklmnop"
]
NORMAL_SEARCH = {"status": "requested", "_count": "5"}


def _outcome_text(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == FHIR_JSON
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    return body["issue"][0]["details"]["text"]


# --- the bounds -------------------------------------------------------------------------------


def _values(count: int, prefix: str = "v") -> str:
    return ",".join(f"{prefix}{i}" for i in range(count))


def test_more_than_128_values_in_all_is_a_400_naming_the_bound(api: httpx.Client) -> None:
    params = [("label", _values(100)), ("description", _values(29))]
    text = _outcome_text(api.get("/Task", params=params), 400, "invalid")
    assert "at most 128 search values are allowed in all parameters together" in text


def test_the_total_bound_holds_for_the_form_search(api: httpx.Client) -> None:
    form = [("label", _values(64)), ("label:contains", _values(65))]
    response = api.post("/Task/_search", data=dict(form))
    text = _outcome_text(response, 400, "invalid")
    assert "at most 128 search values" in text


def test_more_than_16_anded_parameters_is_a_400_naming_the_bound(api: httpx.Client) -> None:
    params = [("label", f"x{i}") for i in range(17)]
    text = _outcome_text(api.get("/Task", params=params), 400, "invalid")
    assert text == "at most 16 search conditions are allowed"


def test_more_than_100_values_in_one_parameter_is_a_400(api: httpx.Client) -> None:
    text = _outcome_text(api.get("/Task", params={"label": _values(101)}), 400, "invalid")
    assert text == "label has more than 100 values"


def test_a_search_at_every_bound_is_served(api: httpx.Client) -> None:
    params = [("label", _values(8, f"n{i}x")) for i in range(16)]  # 16 x 8 = 128 values
    response = api.get("/Task", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 0


# --- the time limit and abandoned searches, on a database with demo data --------------------


@pytest.fixture(scope="module")
def demo_database(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp(f"search-limits-{engine}")
    data = workdir / "demo.ndjson"
    data.write_text(run_cli("demo-data", str(DEMO_TASKS)).stdout)
    with engine_database(engine, workdir) as url:
        run_cli("import", str(data), "--database", url)
        yield url


def _server(url: str, workdir: Path, timeout: str) -> Server:
    return Server(url, workdir, env={"CARETASK_SEARCH_TIMEOUT": timeout})


def test_a_search_past_the_time_limit_is_a_503_with_retry_after(
    demo_database: str, tmp_path: Path
) -> None:
    with (
        _server(demo_database, tmp_path, "0.02") as srv,
        srv.client(srv.token("system/Task.read")) as client,
    ):
        for _ in range(3):  # and each time the connection that ran it is fine afterwards
            response = client.get("/Task", params=SLOW_SEARCH)
            text = _outcome_text(response, 503, "timeout")
            assert response.headers["retry-after"] == "1"
            assert text.startswith("the search did not finish within 0.02 s")
            normal = client.get("/Task", params=NORMAL_SEARCH)
            assert normal.status_code == 200, normal.text
            assert normal.json()["total"] > 0


def _send_and_leave(srv: Server, token: str, count: int) -> None:
    """`count` slow searches (GET and the form POST), each on its own connection; once the
    server has them all, every client closes its connection without reading an answer."""
    socks = []
    query = urlencode(SLOW_SEARCH)
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", srv.port))
        head = f"Host: 127.0.0.1:{srv.port}\r\nAuthorization: Bearer {token}\r\n"
        if i % 2:
            body = query.encode()
            head += "Content-Type: application/x-www-form-urlencoded\r\n"
            request = f"POST /Task/_search HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n"
            sock.sendall(request.encode() + body)
        else:
            sock.sendall(f"GET /Task?{query} HTTP/1.1\r\n{head}\r\n".encode())
        socks.append(sock)
    time.sleep(0.3)
    for sock in socks:
        sock.close()


def test_searches_whose_clients_left_stop_holding_the_database(
    demo_database: str, engine: str, tmp_path: Path
) -> None:
    with _server(demo_database, tmp_path, "60") as srv:
        token = srv.token("system/Task.read")
        with srv.client(token) as client:
            started = time.perf_counter()
            assert client.get("/Task", params=SLOW_SEARCH).status_code == 200
            slow = time.perf_counter() - started
            # more than the engine runs at once (4 SQLite readers, 10 pooled connections):
            # left running, they would hold every reader or connection for seconds
            _send_and_leave(srv, token, 32)
            left = time.perf_counter()
            if engine == "postgresql":
                assert _active_searches(demo_database, within=1.5) == 0
            response = client.get("/Task", params=NORMAL_SEARCH)
            assert response.status_code == 200, response.text
            waited = time.perf_counter() - left
            assert waited < max(0.5, slow), (waited, slow)


def _active_searches(url: str, within: float) -> int:
    """The PostgreSQL backends still running a search on `url`'s database after `within` s
    (polled: the number as soon as it is 0, else at the end)."""
    import psycopg

    deadline = time.monotonic() + within
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            count = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query LIKE '%task_strings%' AND pid <> pg_backend_pid()"
            ).fetchone()[0]  # type: ignore[index]
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.05)
