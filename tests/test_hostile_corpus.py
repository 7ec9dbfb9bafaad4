"""The hostile input corpus (tests/hostile/corpus.py), sent byte for byte.

Specification: every hostile request gets exactly its expected status (SPEC 5-7); every 4xx
with a JSON body is a FHIR OperationOutcome served as application/fhir+json; hostile but valid
searches answer 200 with a searchset Bundle that matches nothing; and nothing is ever written.
Then: injection strings are stored and returned byte for byte and searched for literally.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.hostile.corpus import CLOSED, CORPUS, INJECTIONS, Entry
from tests.support.seed import seed_task
from tests.support.server import Server

FHIR_JSON = "application/fhir+json; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send(server: Server, entry: Entry, token: str) -> Answer | None:
    """Send `entry` on a fresh connection exactly as written (no client-side normalisation of
    the path, headers or body); None when the server closes the connection without answering."""
    headers = {"Host": f"127.0.0.1:{server.port}", "Connection": "close"}
    if entry.authenticated:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(entry.headers)
    if entry.body is not None and "Content-Length" not in entry.headers:
        headers["Content-Length"] = str(len(entry.body))
    head = f"{entry.method} {entry.path} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    request = entry.raw if entry.raw is not None else head.encode("utf-8") + (entry.body or b"")
    received = bytearray()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        # the server may answer (say 413) and close before reading everything
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return parse(bytes(received)) if received else None


def parse(raw: bytes) -> Answer:
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        return Answer(int(status_line.split()[1]), headers, bytes(body))
    length = int(headers.get("content-length", len(rest)))
    return Answer(int(status_line.split()[1]), headers, rest[:length])


def stored(api: httpx.Client) -> int:
    response = api.get("/Task", params={"_summary": "count"})
    assert response.status_code == 200, response.text
    return response.json()["total"]


def check(entry: Entry, answer: Answer | None) -> None:
    """The answer `entry` must get (see the module docstring)."""
    if entry.expected == CLOSED:
        assert answer is None or 400 <= answer.status < 500, answer
        return
    assert answer is not None, "the server closed the connection without answering"
    assert answer.status == entry.expected, (answer.status, answer.body[:500])
    text = answer.body.decode("utf-8", errors="replace")
    assert "Traceback" not in text and "sqlite3." not in text and "psycopg" not in text
    if answer.status >= 400 and entry.path.startswith("/auth/authorize") and answer.status < 413:
        # the sign-in endpoint answers people: an HTML page that echoes nothing it was sent
        assert answer.headers.get("content-type") == "text/html; charset=utf-8", answer.headers
        assert "<script" not in text and "alert(" not in text
    elif (
        answer.status >= 400
        and entry.path.startswith("/auth/")
        and answer.status
        not in (
            413,
            415,
        )
    ):
        # the token endpoint speaks RFC 6749 errors; a body it cannot read at all is refused
        # as every body is, with an OperationOutcome (as the OpenAPI document says)
        assert "error" in json.loads(answer.body)
    elif answer.status >= 400:
        assert answer.headers.get("content-type") == FHIR_JSON, answer.headers
        outcome = json.loads(answer.body)
        assert outcome["resourceType"] == "OperationOutcome", outcome
        assert all(issue["details"]["text"] for issue in outcome["issue"]), outcome
    if answer.status == 200 and entry.path == "/Task/$validate":
        outcome = json.loads(answer.body)
        assert outcome["resourceType"] == "OperationOutcome", outcome
    elif (
        answer.status == 200 and entry.path.startswith("/Task") and entry.method in ("GET", "POST")
    ):
        bundle = json.loads(answer.body)
        kind = "history" if "_history" in entry.path else "searchset"
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == kind, bundle
        if entry.empty_bundle:
            assert bundle["total"] == 0 and not bundle.get("entry"), bundle


def corpus_params() -> list[Any]:
    def marks(entry: Entry) -> list[pytest.MarkDecorator]:
        if entry.bug and not entry.bug_engine:
            return [pytest.mark.xfail(strict=True, reason=entry.bug)]
        return []  # a bug of one engine only is marked in the test

    return [pytest.param(entry, id=entry.name, marks=marks(entry)) for entry in CORPUS]


@pytest.fixture(scope="module")
def count_before_corpus(api: httpx.Client) -> int:
    """How many tasks the (session-shared) server holds before this module's corpus runs."""
    return stored(api)


@pytest.mark.parametrize("entry", corpus_params())
def test_hostile_request_gets_its_expected_answer_and_writes_nothing(
    server: Server,
    api: httpx.Client,
    token: str,
    engine: str,
    count_before_corpus: int,
    entry: Entry,
    request: pytest.FixtureRequest,
) -> None:
    if entry.bug and entry.bug_engine == engine:
        request.applymarker(pytest.mark.xfail(strict=True, reason=entry.bug))
    before = stored(api)
    check(entry, send(server, entry, token))
    assert stored(api) == before, "a hostile request wrote a task"


WRITING_BUGS = [entry.name for entry in CORPUS if entry.bug_writes]


@pytest.mark.xfail(bool(WRITING_BUGS), strict=True, reason=f"known bugs store: {WRITING_BUGS}")
def test_the_whole_corpus_wrote_nothing(api: httpx.Client, count_before_corpus: int) -> None:
    assert stored(api) == count_before_corpus


# --- injection strings are data: stored byte for byte and found literally -------------------

STORED_INJECTIONS = {
    **INJECTIONS,
    "sql-drop-table": "'; DROP TABLE tasks; --",
    "sql-or-1-eq-1": '" OR 1=1 --',
    "sql-like-wildcards": "%' OR '%'='",
    "script-tag": "<script>alert(1)</script>",
    "template": "{{7*7}}",
    "jndi": "${jndi:ldap://x}",
    "rtl-override": "\u202eksat",
    "emoji": "\U0001f4a9\U0001f9d1\u200d\u2695\ufe0f",
}


@pytest.mark.parametrize("value", list(STORED_INJECTIONS.values()), ids=list(STORED_INJECTIONS))
def test_injection_strings_round_trip_and_are_searched_literally(
    api: httpx.Client, value: str
) -> None:
    marker = uuid.uuid4().hex  # makes this run's description unique on the shared server
    description = f"{marker} {value}"
    body = seed_task(
        description=description,
        note=[{"text": value, "time": "2022-03-20T14:00:00.000Z"}],
        identifier=[{"system": "http://example.org/hostile", "value": value}],
    )
    created = api.post("/Task", json=body)
    assert created.status_code == 201, created.text
    task_id = created.headers["location"].rsplit("/", 1)[1]

    task = api.get(f"/Task/{task_id}").json()
    assert task["description"] == description
    assert task["note"][0]["text"] == value
    assert task["identifier"][0]["value"] == value

    def found(param: str, search_value: str) -> list[str]:
        response = api.get(f"/Task?{param}={quote(search_value, safe='')}&_count=100")
        assert response.status_code == 200, response.text
        return [e["resource"]["id"] for e in response.json().get("entry", [])]

    assert found("description:exact", description) == [task_id]
    assert found("description:contains", description) == [task_id]
    assert found("description", description) == [task_id]
    assert task_id in found("description:contains", value)
    assert found("identifier", f"http://example.org/hostile|{value}") == [task_id]
