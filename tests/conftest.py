"""Fixtures that run real `caretask serve` processes on loopback against real databases."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

CARETASK = shutil.which("caretask", path=str(Path(sys.executable).parent)) or "caretask"
FULL_SCOPE = "system/Task.read system/Task.write"

SEED_CREATE: dict[str, Any] = {
    "resourceType": "Task",
    "extension": [
        {
            "url": "http://schemas.canvasmedical.com/fhir/extensions/task-group",
            "valueReference": {
                "reference": "Group/9bf1d726-8c04-4aed-8b0e-e066f4d54b13",
                "display": "All Responsibilities",
            },
        }
    ],
    "status": "requested",
    "requester": {"reference": "Practitioner/5eede137ecfe4124b8b773040e33be14"},
    "description": "Ask patient for new insurance information.",
    "for": {"reference": "Patient/5350cd20de8a470aa570a852859ac87e"},
    "owner": {"reference": "Practitioner/3640cd20de8a470aa570a852859ac87e"},
    "authoredOn": "2022-03-20T14:00:00.000Z",
    "restriction": {"period": {"end": "2022-08-01T04:00:00+00:00"}},
    "note": [
        {
            "text": "Please be sure to scan them in at their next visit.",
            "time": "2022-03-20T14:00:00.000Z",
            "authorReference": {"reference": "Practitioner/5eede137ecfe4124b8b773040e33be14"},
        }
    ],
    "input": [{"type": {"text": "label"}, "valueString": "Urgent"}],
}


def seed_task(**changes: Any) -> dict[str, Any]:
    """The seed's create body, with top-level elements replaced (None removes one)."""
    body = copy.deepcopy(SEED_CREATE)
    for key, value in changes.items():
        key = "for" if key == "for_" else key
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


# --- values that must never reach a log ---------------------------------------------------
# Every request the tests send through Server.client() or Server.token() is read by
# _remember_sent: task descriptions, note texts, patient references and ids, search values
# that carry them, client secrets and access tokens. At the end of the session every
# server's log is searched for them (_no_phi_in_server_logs): issue 6 item 5.

SENT: set[str] = set()
LOG_SCAN: list[str] = []  # the scan's summary, printed at the end of the run
PHI_PARAMETERS = {"patient", "subject", "for", "description", "_text", "_content", "note"}
MIN_SENT_LENGTH = 8  # shorter values ("Urgent") would match unrelated log text


def _remember(value: object) -> None:
    if isinstance(value, str) and len(value) >= MIN_SENT_LENGTH:
        SENT.add(value)
        if value.startswith("Patient/"):
            _remember(value.removeprefix("Patient/"))


def _remember_pairs(pairs: list[tuple[str, str]]) -> None:
    for name, value in pairs:
        if name.split(":")[0].split(".")[0] in PHI_PARAMETERS or name == "client_secret":
            for part in value.split(","):
                _remember(part)


def _remember_body(body: object) -> None:
    if not isinstance(body, dict):
        return
    _remember(body.get("description"))
    for key in ("for", "subject"):
        ref = body.get(key)
        if isinstance(ref, dict):
            _remember(ref.get("reference"))
    notes = body.get("note")
    for note in notes if isinstance(notes, list) else []:
        if isinstance(note, dict):
            _remember(note.get("text"))


def _remember_sent(request: httpx.Request) -> None:
    from urllib.parse import parse_qsl

    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        _remember(auth[7:].strip())
    _remember_pairs(parse_qsl(request.url.query.decode(), keep_blank_values=True))
    try:
        content = request.content
    except httpx.RequestNotRead:
        return
    kind = request.headers.get("content-type", "")
    if "json" in kind:
        with suppress(ValueError, RecursionError):  # hostile bodies are sent too
            _remember_body(json.loads(content))
    elif "x-www-form-urlencoded" in kind:
        _remember_pairs(parse_qsl(content.decode(errors="replace"), keep_blank_values=True))


def leaked_values(log_text: str, sent: set[str]) -> list[str]:
    """The sent values that appear in a log, raw or percent-encoded."""
    from urllib.parse import quote

    return sorted(
        v for v in sent if v in log_text or quote(v, safe="", errors="backslashreplace") in log_text
    )


@pytest.fixture(scope="session", autouse=True)
def _no_phi_in_server_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    started = time.perf_counter()
    logs = sorted(tmp_path_factory.getbasetemp().rglob("server-*.log"))
    leaks = {}
    for path in logs:
        found = leaked_values(path.read_text(errors="replace"), SENT)
        if found:
            leaks[str(path)] = [v[:40] for v in found[:5]]
    size = sum(path.stat().st_size for path in logs)
    LOG_SCAN.append(
        f"searched {len(logs)} server logs ({size:,} bytes) for {len(SENT):,} sent values "
        f"(PHI, secrets, tokens) in {time.perf_counter() - started:.2f} s: "
        f"{'found in ' + str(len(leaks)) if leaks else 'none found'}"
    )
    assert not leaks, f"server logs carry values the tests sent: {leaks}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in LOG_SCAN:
        terminalreporter.write_line(f"log scan: {line}")


def new_patient() -> str:
    """A patient id no other test uses, so that searches see only this test's tasks."""
    return uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [CARETASK, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"caretask {' '.join(args)} failed: {result.stderr}")
    return result


@dataclass
class Server:
    """A running `caretask serve` process."""

    database: str
    workdir: Path
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    launcher: tuple[str, ...] = ()  # a command that runs the server, e.g. taskset -c 0
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.log_path = self.workdir / f"server-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed when the process ends)
        self.process = subprocess.Popen(
            [
                *self.launcher,
                CARETASK,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                self.database,
                *self.extra,
            ],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/metadata", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def create_client(self, scope: str = FULL_SCOPE, name: str = "tests") -> dict[str, str]:
        out = run_cli(
            "clients",
            "create",
            name,
            "--scope",
            scope,
            "--database",
            self.database,
            cwd=self.workdir,
        )
        return json.loads(out.stdout)

    def token(self, scope: str = FULL_SCOPE) -> str:
        return self.login(scope)[1]

    def login(self, scope: str = FULL_SCOPE) -> tuple[str, str]:
        """A new client's id and an access token for it."""
        creds = self.create_client(scope)
        response = httpx.post(
            f"{self.url}/auth/token/",
            data={
                "grant_type": "client_credentials",
                "client_id": creds["client_id"],
                "client_secret": creds["client_secret"],
            },
        )
        assert response.status_code == 200, response.text
        _remember(creds["client_secret"])
        _remember(response.json()["access_token"])
        return creds["client_id"], response.json()["access_token"]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=30,
            event_hooks={"request": [_remember_sent]},
        )


ENGINES = ["sqlite", "postgresql"]
POSTGRES_URL = os.environ.get("CARETASK_TEST_POSTGRES_URL")


def database_url(engine: str, workdir: Path) -> str:
    if engine == "sqlite":
        return f"sqlite:///{workdir / 'caretask.db'}"
    raise ValueError(engine)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test session, dropped afterwards."""
    import psycopg
    from psycopg import sql

    assert POSTGRES_URL
    name = f"caretask_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(POSTGRES_URL)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def engine_database(engine: str, workdir: Path) -> Iterator[str]:
    """A database of `engine` that nothing else uses: a fresh PostgreSQL database
    (dropped afterwards), or an SQLite file in `workdir`."""
    if engine == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        yield database_url(engine, workdir)


@pytest.fixture(scope="session", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("CARETASK_TEST_POSTGRES_URL is not set: no PostgreSQL to test against")
    return request.param


@pytest.fixture(scope="session")
def server(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"server-{engine}")
    with engine_database(engine, workdir) as url:
        srv = Server(url, workdir).start()
        try:
            yield srv
        finally:
            srv.stop()


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


def create_task(api: httpx.Client, body: dict[str, Any]) -> str:
    """Create a task and return its id (from the Location header)."""
    response = api.post("/Task", json=body)
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def signing_key(server: Server) -> bytes:
    """The server's token signing key, read from its database (to forge test tokens)."""
    import base64
    import sqlite3

    query = "SELECT secret FROM signing_keys WHERE name = 'access-token'"
    if server.database.startswith("postgresql"):
        import psycopg

        with psycopg.connect(server.database) as conn:
            row = conn.execute(query).fetchone()
    else:
        with sqlite3.connect(server.database.removeprefix("sqlite:///")) as conn:
            row = conn.execute(query).fetchone()
    assert row is not None
    return base64.b64decode(row[0])


def within_client_cache_time(request: Callable[[], httpx.Response]) -> httpx.Response:
    """A server keeps a client's row for CARETASK_CLIENT_CACHE_SECONDS (1 s by default), so
    a revocation shows within that: the first 401, else the last response after 2.5 s."""
    deadline = time.monotonic() + 2.5
    while True:
        response = request()
        if response.status_code == 401 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)
