"""Issue 18 (SPEC 13): logs as text or JSON lines (CARETASK_LOG_FORMAT), and the request id.

Every answer carries `X-Request-Id`: the client's, when it is short and plain (at most 128
of `A-Z a-z 0-9 . _ : @ + = / -`), else a new one. In the JSON format each access line is
one object with the time, level, logger, message, request id, method, path, parameter
names, interaction, status, duration and client; never a query value or a body (the
session's log scan searches the JSON logs too: the PostgreSQL session server writes them).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.databases import database_url
from tests.support.seed import SEED_CREATE
from tests.support.server import Server, run_cli

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("json-logs")
    env = {"CARETASK_LOG_FORMAT": "json"}
    with Server(database_url("sqlite", workdir), workdir, env=env) as srv:
        yield srv


def lines(srv: Server) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in srv.log().splitlines() if line.strip()]


def access_line(srv: Server, request_id: str) -> dict[str, Any]:
    """The request's access line, once written: the server logs a request after its answer
    has gone, so the client may read the log before the line is there."""
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in lines(srv) if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(found) == 1, found
    return found[0]


def test_a_plain_request_id_is_kept_and_returned(json_server: Server) -> None:
    with json_server.client(json_server.token()) as api:
        response = api.get(
            "/Task", params={"status": "requested"}, headers={"X-Request-Id": "rq-1.a:b"}
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "rq-1.a:b"


@pytest.mark.parametrize(
    "given",
    ["has space", "line\\nbreak", '"quoted"', "x" * 129, "café", ""],
    ids=["space", "backslash", "quotes", "too-long", "non-ascii", "empty"],
)
def test_a_request_id_that_is_not_plain_is_replaced_by_a_new_one(
    json_server: Server, given: str
) -> None:
    with json_server.client() as api:
        headers = [(b"X-Request-Id", given.encode())]
        response = api.get("/metadata", headers=headers)
    assert response.status_code == 200
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_each_request_without_one_gets_its_own_request_id(json_server: Server) -> None:
    with json_server.client() as api:
        ids = {api.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(GENERATED.fullmatch(i) for i in ids)


def test_an_error_answer_carries_the_request_id_too(json_server: Server) -> None:
    with json_server.client() as api:
        response = api.get("/Task/x", headers={"X-Request-Id": "unauthenticated-1"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "unauthenticated-1"


def test_every_line_of_a_json_log_is_one_json_object(json_server: Server) -> None:
    with json_server.client() as api:
        api.get("/metadata")
    parsed = lines(json_server)
    assert parsed
    assert all({"time", "level", "logger", "message"} <= set(line) for line in parsed)


def test_a_json_access_line_says_who_did_what_and_how_it_went(json_server: Server) -> None:
    client_id, token = json_server.login()
    with json_server.client(token) as api:
        response = api.post("/Task", json=SEED_CREATE, headers={"X-Request-Id": "create-1"})
    assert response.status_code == 201
    line = access_line(json_server, "create-1")
    assert line["logger"] == "caretask.access"
    assert line["level"] == "INFO"
    assert (line["method"], line["path"], line["interaction"], line["status"]) == (
        "POST",
        "/Task",
        "create",
        201,
    )
    assert line["client_id"] == client_id
    assert isinstance(line["duration_ms"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])


def test_a_json_access_line_names_the_search_parameters_not_their_values(
    json_server: Server,
) -> None:
    with json_server.client(json_server.token()) as api:
        api.get(
            "/Task", params={"patient": "Patient/secret-value"}, headers={"X-Request-Id": "s-1"}
        )
    line = access_line(json_server, "s-1")
    assert line["params"] == "patient"
    assert line["interaction"] == "search-type"
    assert "secret-value" not in json_server.log()


def test_an_unknown_log_format_is_refused_at_start(tmp_path: Path) -> None:
    result = run_cli("serve", "--log-format", "xml", "--port", "1", check=False, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "caretask: --log-format must be one of text, json, not 'xml'\n"
