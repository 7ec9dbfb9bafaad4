"""Schemathesis fuzzes every operation of the server's own OpenAPI document.

Specification: against a real server of its own (both engines), authenticated with a real
token, requests generated from /openapi.json, valid (positive) and schema-breaking
(negative), get no 5xx; every answer conforms to the document (status, content type,
headers, body schema); every 4xx or 5xx of a FHIR endpoint is an OperationOutcome; and
rejected requests write nothing: the stored Tasks and versions are exactly those of the
201 creates, 200 updates and patches, and 204 deletes (a delete of a deleted Task writes
nothing, an update of one brings it back; $validate stores nothing).

Plain `pytest` makes a smoke run (CARETASK_FUZZ_SMOKE_REQUESTS, 400 requests per engine).
The dedicated target sends CARETASK_FUZZ_REQUESTS, at least 5,000 (README, Fuzzing);
CARETASK_FUZZ_VERBOSE=1 adds the statuses of each operation to the printed counts:

    CARETASK_FUZZ_REQUESTS=5000 pytest -m slow tests/test_fuzz.py -s

Empty bodies (a write without Prefer: return=representation, a 304) are checked for status
and headers only: the document gives the body that return=representation brings.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from caretask.domain.dates import parse_range
from tests.support.clients import create_task
from tests.support.seed import seed_task
from tests.support.server import FULL_SCOPE, Server

SMOKE_REQUESTS = int(os.environ.get("CARETASK_FUZZ_SMOKE_REQUESTS", "400"))
FULL_REQUESTS = os.environ.get("CARETASK_FUZZ_REQUESTS")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
BODY_CHECKS = (content_type_conformance, response_schema_conformance)
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
OAUTH_PATHS = ("/auth/token", "/auth/token/", "/auth/authorize")  # not FHIR: OAuth, pages
SEEDED_TASKS = 5
# characters that regex dialects disagree on (tests/test_openapi.py): whitespace to one of
# the server (Python), the validator (ECMA-262) and the generator (Python, ASCII) and not to
# another. The generator draws them rarely: one in four bodies gets one in one of its
# strings, and every run ends with valid creates and updates that each carry one and ask for
# the stored Task back, so that a 201 echoing what the document refuses is found.
EDGE_CHARACTERS = [*"\t\n \u0085\u00a0\u1680\u2000\u2028\u202f\u3000\ufeff\u200b\u180e"]
EDGE = st.tuples(st.integers(0, 2**16), st.sampled_from(EDGE_CHARACTERS), st.integers(0, 64))
EDGES = st.one_of(st.none(), st.none(), st.none(), EDGE)
EDGE_OPERATIONS = ("POST /Task", "PUT /Task/{id}")
# the operations whose 200 stores a new version ($validate's 200 stores nothing)
WRITES = ("PUT /Task/{id}", "PATCH /Task/{id}", "PATCH /Task")
# the operations whose 200 stores a new version unless the Task was as asked already (a
# claim of one's own task): the stored Task's lastUpdated tells which
CLAIMS = ("POST /Task/{id}/$claim", "POST /Task/$claim-next", "POST /Task/{id}/$release")
EDGE_SHARE = 10  # of every run's requests, the percentage sent by those final rounds


@dataclass
class Tally:
    """What a run sent and got; failures are kept (at most a few per kind) for the report."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    creates: int = 0
    updates: int = 0
    deletes: int = 0  # of Tasks not deleted before
    revived: int = 0  # deleted Tasks that an update brought back
    deleted: set[str] = field(default_factory=set)
    failures: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, kind: str, detail: str) -> None:
        seen = self.failures.setdefault(kind, [])
        if len(seen) < 3:
            seen.append(detail)

    def report(self, label: str, seconds: float) -> str:
        histogram = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        server_errors = sum(n for s, n in self.statuses.items() if s >= 500)
        return (
            f"fuzz[{label}]: {self.requests} requests in {seconds:.0f} s; "
            f"statuses {{{histogram}}}; 5xx: {server_errors}; "
            f"creates: {self.creates}, updates: {self.updates}, deletes: {self.deletes}"
        )


def describe(case: schemathesis.Case, response: schemathesis.Response | None) -> str:
    """The request (never its headers: they carry the token) and the answer, for a report."""
    body = case.body if not isinstance(case.body, bytes) else case.body[:300]
    sent = json.dumps(body, default=repr)[:600] if body is not None else ""
    text = response.content[:400].decode("utf-8", "replace") if response is not None else ""
    answer = f" -> {response.status_code} {text}" if response is not None else ""
    where = f"{case.operation.label} path={case.path_parameters} query={case.query}"
    return f"{where} body={sent}{answer}"


def _string_paths(node: object, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(node, str):
        return [path]
    if isinstance(node, dict):
        items: Any = node.items()
    else:
        items = enumerate(node) if isinstance(node, list) else ()
    return [found for key, value in items for found in _string_paths(value, (*path, key))]


def with_edge_character(body: object, pick: int, char: str, at: int) -> object:
    """`body` with `char` put into one of its strings (`pick`, `at` chosen modulo)."""
    paths = _string_paths(body)
    if not paths:
        return body
    path = paths[pick % len(paths)]
    out = copy.deepcopy(body)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    text = node[path[-1]]
    cut = at % (len(text) + 1)
    node[path[-1]] = text[:cut] + char + text[cut:]
    return out


def is_fhir_endpoint(path: str) -> bool:
    return path not in OAUTH_PATHS


def check_outcome(response: schemathesis.Response) -> str | None:
    """Every 4xx/5xx with a body is a FHIR OperationOutcome with at least one issue."""
    if response.status_code < 400 or not response.content:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return "an error body that is not JSON"
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return "an error body that is not an OperationOutcome"
    if not body.get("issue"):
        return "an OperationOutcome without issues"
    return None


class Fuzzer:
    """Sends generated cases for one operation at a time and keeps the tally."""

    def __init__(self, server: Server, token: str, known_ids: list[str], tally: Tally) -> None:
        self.server = server
        self.auth = {"Authorization": f"Bearer {token}"}
        self.known_ids = known_ids
        self.tally = tally
        self.session = requests.Session()
        self.schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")

    def operations(self) -> list[schemathesis.APIOperation]:
        return [result.ok() for result in self.schema.get_all_operations()]

    def send(self, case: schemathesis.Case, known_id: str | None) -> None:
        if known_id is not None and "id" in (case.path_parameters or {}):
            case.path_parameters["id"] = known_id
            if "vid" in case.path_parameters:
                case.path_parameters["vid"] = "1"  # every Task has it
        # a case that breaks the security scheme on purpose keeps its bad Authorization
        headers = None if self.schema.is_security_param_negated(case) else self.auth
        # the one Task a conditional delete will delete, if its search finds exactly one
        target = self.only_match(case) if case.operation.label == "DELETE /Task" else None
        sent_at = time.time()
        response = case.call(base_url=self.server.url, session=self.session, headers=headers)
        self.record(case, response, target, sent_at)
        checks = CHECKS
        if not response.content and response.status_code in (200, 201, 204, 304):
            # a write without Prefer: return=representation, or a 304: no body to check
            checks = [c for c in CHECKS if c not in BODY_CHECKS]
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except (Exception, BaseExceptionGroup) as failure:  # keep it for the report, go on
            inner = getattr(failure, "exceptions", [failure])
            title = "; ".join(str(f).strip().splitlines()[0][:80] for f in inner)
            self.tally.fail(title, describe(case, response) + f"\n    {failure}"[:1500])
        if is_fhir_endpoint(case.operation.path):
            problem = check_outcome(response)
            if problem:
                self.tally.fail(problem, describe(case, response))

    def only_match(self, case: schemathesis.Case) -> str | None:
        query = {**(case.query or {}), "_count": "2", "_elements": "id"}
        found = self.session.get(f"{self.server.url}/Task", params=query, headers=self.auth)
        entries = found.json().get("entry", []) if found.status_code == 200 else []
        return entries[0]["resource"]["id"] if len(entries) == 1 else None

    def record(
        self,
        case: schemathesis.Case,
        response: schemathesis.Response,
        target: str | None = None,
        sent_at: float = 0.0,
    ) -> None:
        tally = self.tally
        tally.requests += 1
        tally.statuses[response.status_code] += 1
        tally.operations[f"{case.operation.label} {response.status_code}"] += 1
        if case.operation.label == "POST /Task" and response.status_code == 201:
            tally.creates += 1
            self.known_ids.append(response.headers["location"][0].rsplit("/", 1)[1])
        task_id = (case.path_parameters or {}).get("id")
        if case.operation.label in WRITES and response.status_code == 200:
            tally.updates += 1  # a new version of a Task
            if task_id in tally.deleted:  # only an update (PUT) of a deleted Task succeeds
                tally.deleted.discard(task_id)
                tally.revived += 1
        if case.operation.label in CLAIMS and response.status_code == 200:
            written = parse_range(response.json()["meta"]["lastUpdated"])
            if written is not None and written[0] / 1e6 >= sent_at:
                tally.updates += 1
        if case.operation.label == "DELETE /Task" and "etag" in response.headers:
            task_id = target  # the search's one match, now deleted
        deleting = case.operation.label in ("DELETE /Task/{id}", "DELETE /Task")
        deleted = response.status_code == 204 and task_id is not None
        if deleting and deleted and task_id not in tally.deleted:
            tally.deleted.add(task_id)
            tally.deletes += 1
        if case.operation.label == "PUT /Task" and response.status_code == 201:
            tally.creates += 1
        if case.operation.label == "POST /" and response.status_code == 200:
            self.record_bundle(case.body, response.json())

    def record_bundle(self, sent: Any, answered: dict[str, Any]) -> None:
        """A Bundle's writes: each entry answered 201 made a task; a PUT or PATCH answered
        200 a version (a conditional create answered 200 wrote nothing); a DELETE answered
        with an ETag deleted the task its location names, unless it was deleted already."""
        tally = self.tally
        for request, answer in zip(sent.get("entry", []), answered["entry"], strict=True):
            status = answer["response"]["status"]
            asked = request.get("request") if isinstance(request, dict) else None
            method = asked.get("method") if isinstance(asked, dict) else None
            if status.startswith("201"):
                tally.creates += 1
            elif status.startswith("200") and method in ("PUT", "PATCH"):
                tally.updates += 1
            elif status.startswith("204") and "location" in answer["response"]:
                task_id = answer["response"]["location"].split("/")[1]
                if task_id not in tally.deleted:
                    tally.deleted.add(task_id)
                    tally.deletes += 1

    def run(
        self,
        operation: schemathesis.APIOperation,
        mode: GenerationMode,
        n: int,
        edges: st.SearchStrategy[tuple[int, str, int] | None] = EDGES,
        representation: bool = False,
    ) -> bool:
        """Send up to `n` cases; False when the operation has no cases of this mode (say,
        negative ones for an operation without parameters). `edges` puts an edge character
        into the body; `representation` asks a write for the stored Task."""
        strategy = operation.as_strategy(generation_mode=mode)
        # most reads and updates address a Task that exists (else nearly all would be 404s)
        ids = st.sampled_from(self.known_ids)
        known = st.one_of(st.none(), ids, ids)

        @settings(
            max_examples=n,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy, known_id=known, edge=edges)
        def fuzz(
            case: schemathesis.Case, known_id: str | None, edge: tuple[int, str, int] | None
        ) -> None:
            if edge is not None and isinstance(case.body, dict | list):
                case.body = with_edge_character(case.body, *edge)
            if representation:
                case.headers = {**(case.headers or {}), "Prefer": "return=representation"}
            self.send(case, known_id)

        try:
            fuzz()
        except Unsatisfiable:
            return False
        return True


def stored_versions(api: httpx.Client) -> tuple[int, int]:
    """(Tasks, versions) the server holds: the count (deleted ones are not), and the
    entries of the change feed (every version, deletes too)."""
    count = api.get("/Task", params={"_summary": "count"}).json()["total"]
    versions = 0
    url: str | None = "/_history?_count=100"
    while url is not None:
        page = api.get(url).json()
        versions += len(page.get("entry", []))
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    return count, versions


def fuzz(server: Server, target: int, label: str) -> Tally:
    # the Subscription operations are fuzzed past the scope check too
    token = server.token(f"{FULL_SCOPE} system/Subscription.*")
    tally = Tally()
    with server.client(token) as api:
        known = [create_task(api, seed_task()) for _ in range(SEEDED_TASKS)]
        tasks_before, versions_before = stored_versions(api)
        fuzzer = Fuzzer(server, token, known, tally)
        runs = [(operation, mode) for operation in fuzzer.operations() for mode in MODES]
        per_run = max(1, target // len(runs))
        started = time.monotonic()
        edge_runs = [op for op in fuzzer.operations() if op.label in EDGE_OPERATIONS]
        edge_target = target * EDGE_SHARE // 100
        while tally.requests < target - edge_target:  # operations with few requests end early
            runs = [(op, mode) for op, mode in runs if fuzzer.run(op, mode, per_run)]
        for op in edge_runs:
            fuzzer.run(op, GenerationMode.POSITIVE, edge_target // len(edge_runs), EDGE, True)
        seconds = time.monotonic() - started
        tasks_after, versions_after = stored_versions(api)
    print("\n" + tally.report(label, seconds))
    if os.environ.get("CARETASK_FUZZ_VERBOSE"):
        for op, n in sorted(tally.operations.items()):
            print(f"  {op}: {n}")
    for kind, examples in tally.failures.items():
        print(f"  FAILURE {kind}")
        for example in examples:
            print(f"    {example}")
    assert tally.requests >= target
    assert sum(n for status, n in tally.statuses.items() if status >= 500) == 0, "5xx answers"
    assert not tally.failures, list(tally.failures)
    live = tally.creates - tally.deletes + tally.revived
    assert tasks_after - tasks_before == live, "a rejected create, update or delete changed Tasks"
    assert versions_after - versions_before == tally.creates + tally.updates + tally.deletes, (
        "a rejected create, update or delete stored a version"
    )
    return tally


@pytest.fixture
def fuzz_server(engine: str, fresh_database: str, make_server: Callable[..., Server]) -> Server:
    """A server of its own: generated writes must not clobber other tests' data."""
    return make_server(database=fresh_database)


def test_smoke_fuzz_finds_no_5xx_no_nonconformance_and_no_rejected_write(
    fuzz_server: Server, engine: str
) -> None:
    fuzz(fuzz_server, SMOKE_REQUESTS, f"{engine}, smoke")


@pytest.mark.slow
@pytest.mark.skipif(not FULL_REQUESTS, reason="the dedicated target: set CARETASK_FUZZ_REQUESTS")
def test_full_fuzz_finds_no_5xx_no_nonconformance_and_no_rejected_write(
    fuzz_server: Server, engine: str
) -> None:
    target = int(FULL_REQUESTS or 0)
    assert target >= 5000, "the dedicated run sends at least 5,000 requests"
    fuzz(fuzz_server, target, engine)
