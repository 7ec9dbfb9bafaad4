"""The pytest fixtures and hooks: real `caretask serve` processes on loopback against real
databases of both engines, and the session-end search of their logs for what the tests
sent. What they are built from is in tests/support, by job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.databases import (
    ENGINES,
    POSTGRES_URL,
    database_url,
    engine_database,
)
from tests.support.log_scan import LOG_SCAN, scan_server_logs
from tests.support.server import Server


@pytest.fixture(scope="session", autouse=True)
def _no_phi_in_server_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    leaks = scan_server_logs(tmp_path_factory.getbasetemp())
    assert not leaks, f"server logs carry values the tests sent: {leaks}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in LOG_SCAN:
        terminalreporter.write_line(f"log scan: {line}")


@pytest.fixture(scope="session", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("CARETASK_TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    return request.param


@pytest.fixture(scope="session")
def server(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"server-{engine}")
    # one engine's server writes JSON lines: the session-end log scan covers both formats
    env = {"CARETASK_LOG_FORMAT": "json"} if engine == "postgresql" else {}
    with engine_database(engine, workdir) as url, Server(url, workdir, env=env) as srv:
        yield srv


@pytest.fixture(scope="session")
def token(server: Server) -> str:
    return server.token()


@pytest.fixture(scope="session")
def api(server: Server, token: str) -> Iterator[httpx.Client]:
    with server.client(token) as client:
        yield client


@pytest.fixture
def fresh_database(engine: str, tmp_path: Path) -> Iterator[str]:
    """A database of the engine under test that only this test uses."""
    with engine_database(engine, tmp_path) as url:
        yield url


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Start extra servers (own database unless given one); all stopped after the test."""
    started: list[Server] = []

    def start(
        *extra: str,
        database: str | None = None,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Server:
        srv = Server(
            database or database_url("sqlite", tmp_path),
            workdir or tmp_path,
            extra=extra,
            env=env or {},
        )
        started.append(srv.start())
        return srv

    yield start
    for srv in started:
        srv.stop()
