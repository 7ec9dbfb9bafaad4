"""Every kind of body the server and its command line return, validated by an independent
validator (tests/support/validator.py: @medplum/core's validateResource with the FHIR R4
definitions, and HL7's R4 JSON schema): 0 invalid, on both engines, and in the fhir profile
where the server has one.

The bodies of an engine are gathered from real servers once (one node process validates them
all: it takes seconds to start) and each test asserts on one kind, so that a failure names
it. Gathering a kind that fails (an unexpected status) fails that kind's test only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from caretask.domain.errors import Issue as DomainIssue
from caretask.domain.outcome import operation_outcome
from tests.hostile.corpus import CLOSED, CORPUS
from tests.support.clients import create_task
from tests.support.databases import engine_database
from tests.support.node import require_node
from tests.support.rawhttp import connect, read_response
from tests.support.seed import label_input, new_patient, seed_task
from tests.support.server import Server, run_cli
from tests.support.validator import Issue, validate_all
from tests.test_hostile_corpus import send

FHIR_JSON = "application/fhir+json"

Body = dict[str, Any]


@dataclass
class Kind:
    """The bodies of one kind, each with a label saying which request gave it."""

    bodies: list[tuple[str, Body]] = field(default_factory=list)
    issues: list[list[Issue]] = field(default_factory=list)
    error: BaseException | None = None


Gathered = dict[str, Kind]


def _json(response: httpx.Response, status: int | None = None) -> Body:
    if status is not None:
        assert response.status_code == status, (status, response.status_code, response.text)
    assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
    body: Body = response.json()
    return body


def _outcome(response: httpx.Response, status: int) -> Body:
    body = _json(response, status)
    assert body["resourceType"] == "OperationOutcome", body
    return body


class _Gatherer:
    def __init__(self) -> None:
        self.kinds: Gathered = {}
        self.prefix = ""  # names the kinds of a server in a profile other than the default

    def kind(self, name: str, gather: Callable[[], list[tuple[str, Body]]]) -> None:
        kind = self.kinds.setdefault(self.prefix + name, Kind())
        try:
            kind.bodies.extend(gather())
        except Exception as error:  # reported by the kind's test, with its traceback
            kind.error = error

    def validate(self) -> Gathered:
        everything = [body for kind in self.kinds.values() for _, body in kind.bodies]
        results = iter(validate_all(everything))
        for kind in self.kinds.values():
            kind.issues = [next(results) for _ in kind.bodies]
        return self.kinds


def _since_now() -> str:
    """A FHIR dateTime a second ago: --since for the CLI's records of this module only."""
    return (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _ndjson(text: str) -> list[Body]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def _api_bodies(g: _Gatherer, server: Server, api: httpx.Client) -> None:
    patient = new_patient()
    seed = seed_task(for_={"reference": f"Patient/{patient}"})
    task_id = create_task(api, seed)
    parent_id = create_task(api, {**seed, "description": "the parent"})
    child_id = create_task(
        api, {**seed, "partOf": [{"reference": f"Task/{parent_id}"}], "input": label_input("c")}
    )
    minimal_id = create_task(
        api,
        seed_task(
            for_=seed["for"], extension=None, owner=None, restriction=None, note=None, input=None
        ),
    )
    representation = {"Prefer": "return=representation"}

    g.kind(
        "task read",
        lambda: [
            (f"GET /Task/{i}", _json(api.get(f"/Task/{i}"), 200))
            for i in (task_id, parent_id, child_id, minimal_id)
        ],
    )

    def created() -> list[tuple[str, Body]]:
        made = api.post("/Task", json=seed, headers=representation)
        out = [("POST /Task return=representation", _json(made, 201))]
        new_id = made.headers["location"].split("/Task/")[1].split("/")[0]
        changed = {**seed, "id": new_id, "status": "completed"}
        updated = api.put(f"/Task/{new_id}", json=changed, headers=representation)
        out.append(("PUT /Task/<id> return=representation", _json(updated, 200)))
        patch = [{"op": "add", "path": "/note/-", "value": {"text": "patched"}}]
        headers = {**representation, "Content-Type": "application/json-patch+json"}
        patched = api.patch(f"/Task/{new_id}", json=patch, headers=headers)
        out.append(("PATCH /Task/<id> return=representation", _json(patched, 200)))
        return out

    g.kind("create with representation", created)

    def history() -> list[tuple[str, Body]]:
        api.put(f"/Task/{task_id}", json={**seed, "id": task_id, "description": "second"})
        return [(f"GET /Task/{task_id}/_history", _json(api.get(f"/Task/{task_id}/_history"), 200))]

    g.kind("history", history)

    def deleted() -> list[tuple[str, Body]]:
        gone = create_task(api, seed)
        api.put(f"/Task/{gone}", json={**seed, "id": gone, "status": "completed"})
        assert api.delete(f"/Task/{gone}").status_code == 204
        back = create_task(api, seed)
        api.delete(f"/Task/{back}")
        api.put(f"/Task/{back}", json={**seed, "id": back})
        return [
            (f"GET /Task/{i}/_history", _json(api.get(f"/Task/{i}/_history"), 200))
            for i in (gone, back)
        ]

    g.kind("history with deletes", deleted)
    g.kind(
        "change feed",
        lambda: [
            (f"GET {path}?{query}", _json(api.get(f"{path}?{query}"), 200))
            for path in ("/Task/_history", "/_history")
            for query in ("_count=3", "_count=0", "_since=2000-01-01T00:00:00Z&_count=100")
        ],
    )

    def bundle_responses() -> list[tuple[str, Body]]:
        urn = "urn:uuid:6f1f3a52-1f4b-4d43-9a43-3f8d2a9c7e11"
        identifier = [{"system": "urn:caretask:validator", "value": new_patient()}]
        entries = [
            {"fullUrl": urn, "resource": seed, "request": {"method": "POST", "url": "Task"}},
            {
                "resource": {**seed, "identifier": identifier, "partOf": [{"reference": urn}]},
                "request": {"method": "PUT", "url": f"Task?identifier={new_patient()}"},
            },
            {"request": {"method": "GET", "url": f"Task/{task_id}"}},
            {"request": {"method": "GET", "url": f"Task?patient={patient}"}},
        ]
        out = []
        for kind, headers in (("transaction", representation), ("batch", {})):
            bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
            if kind == "batch":  # a failed entry too; no references between entries
                bundle["entry"] = [
                    entries[0],
                    entries[2],
                    {"request": {"method": "GET", "url": "Task/unknown-task"}},
                ]
            out.append((f"POST / {kind}", _json(api.post("/", json=bundle, headers=headers), 200)))
        failed = {"resourceType": "Bundle", "type": "transaction", "entry": [entries[0], {}]}
        out.append(("POST / failed transaction", _outcome(api.post("/", json=failed), 400)))
        return out

    g.kind("bundle responses", bundle_responses)
    g.kind(
        "vread",
        lambda: [
            (
                f"GET /Task/{task_id}/_history/{v}",
                _json(api.get(f"/Task/{task_id}/_history/{v}"), 200),
            )
            for v in (1, 2)
        ],
    )

    def searchset() -> list[tuple[str, Body]]:
        out = []
        for query in (
            f"patient={patient}",
            f"patient={patient}&_count=1",
            f"_id={task_id}&_total=accurate",
            f"patient={patient}&_sort=-_lastUpdated&status=requested",
        ):
            out.append((f"GET /Task?{query}", _json(api.get(f"/Task?{query}"), 200)))
        form = api.post("/Task/_search", data={"patient": patient})
        out.append(("POST /Task/_search", _json(form, 200)))
        # the next page, through the link the server wrote
        first = out[1][1]
        next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
        out.append(("the next link of _count=1", _json(api.get(next_url), 200)))
        return out

    g.kind("searchset with entries", searchset)
    g.kind(
        "searchset without entries",
        lambda: [
            (f"GET /Task?{q}", _json(api.get(f"/Task?{q}"), 200))
            for q in (f"patient={new_patient()}", f"patient={new_patient()}&_total=accurate")
        ],
    )
    g.kind(
        "include and revinclude",
        lambda: [
            (f"GET /Task?{q}", _json(api.get(f"/Task?{q}"), 200))
            for q in (
                f"_id={child_id}&_include=Task:part-of",
                f"_id={parent_id}&_revinclude=Task:part-of",
                f"_id={child_id}&_include=Task:part-of:Task&_revinclude=Task:part-of",
            )
        ],
    )
    g.kind(
        "elements",
        lambda: [
            (f"GET {path}", _json(api.get(path), 200))
            for path in (
                f"/Task?patient={patient}&_elements=for",
                f"/Task?patient={patient}&_elements=description,owner",
                f"/Task/{task_id}?_elements=note",
            )
        ],
    )
    g.kind(
        "summary count",
        lambda: [
            (
                f"GET /Task?patient={patient}&_summary=count",
                _json(api.get(f"/Task?patient={patient}&_summary=count"), 200),
            )
        ],
    )

    def summaries() -> list[tuple[str, Body]]:
        # whatever the server answers (a Bundle, or an OperationOutcome where a mode is not
        # supported yet) must be valid
        out = []
        for mode in ("true", "text", "data", "false"):
            for path in (
                f"/Task?patient={patient}&_summary={mode}",
                f"/Task/{task_id}?_summary={mode}",
            ):
                out.append((f"GET {path}", _json(api.get(path))))
        return out

    g.kind("summary modes", summaries)
    g.kind("capability statement", lambda: [("GET /metadata", _json(api.get("/metadata"), 200))])
    _error_bodies(g, server, api, task_id, seed)


def _error_bodies(
    g: _Gatherer, server: Server, api: httpx.Client, task_id: str, seed: Body
) -> None:
    def raw(request: bytes) -> Body:
        with connect(server) as sock:
            sock.sendall(request)
            status, headers, body = read_response(sock)
        assert status == 400, (status, body)
        assert headers["content-type"].startswith("application/fhir+json")
        parsed: Body = orjson.loads(body)
        return parsed

    g.kind(
        "outcome 400",
        lambda: [
            (
                "invalid JSON",
                _outcome(
                    api.post(
                        "/Task", content=b"{", headers={"Content-Type": "application/fhir+json"}
                    ),
                    400,
                ),
            ),
            (
                "a Task without status",
                _outcome(api.post("/Task", json=seed_task(status=None)), 400),
            ),
            (
                "a wrong resourceType",
                _outcome(api.post("/Task", json={**seed, "resourceType": "Patient"}), 400),
            ),
            (
                "an unknown search parameter",
                _outcome(api.get("/Task?nonsense=1", headers={"Prefer": "handling=strict"}), 400),
            ),
            ("a malformed date", _outcome(api.get("/Task?_lastUpdated=zz2020"), 400)),
            (
                "an id that differs from the URL's",
                _outcome(api.put(f"/Task/{task_id}", json={**seed, "id": "other"}), 400),
            ),
            (
                "two Host headers",
                raw(b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n"),
            ),
            ("not HTTP", raw(b"GARBAGE\r\n\r\n")),
        ],
    )
    g.kind(
        "outcome 401",
        lambda: [
            ("no token", _outcome(httpx.get(f"{server.url}/Task"), 401)),
            (
                "a forged token",
                _outcome(
                    httpx.get(
                        f"{server.url}/Task", headers={"Authorization": "Bearer abc.def.ghi"}
                    ),
                    401,
                ),
            ),
        ],
    )

    def forbidden() -> list[tuple[str, Body]]:
        with server.client(server.token("system/Task.read")) as reader:
            return [
                ("a write with a read-only token", _outcome(reader.post("/Task", json=seed), 403))
            ]

    g.kind("outcome 403", forbidden)
    g.kind(
        "outcome 404",
        lambda: [
            ("an unknown Task", _outcome(api.get("/Task/doesnotexist"), 404)),
            ("an unknown version", _outcome(api.get(f"/Task/{task_id}/_history/99"), 404)),
            ("an unknown route", _outcome(api.get("/Patient"), 404)),
            ("an unknown permalink", _outcome(api.get("/permalinks/v1/nothing"), 404)),
        ],
    )
    g.kind(
        "outcome 405",
        lambda: [
            ("TRACE", _outcome(api.request("TRACE", f"/Task/{task_id}"), 405)),
            ("POST to a Task", _outcome(api.post(f"/Task/{task_id}", json=seed), 405)),
        ],
    )

    def gone() -> list[tuple[str, Body]]:
        deleted_id = create_task(api, seed_task())
        api.delete(f"/Task/{deleted_id}")
        return [
            ("a deleted Task", _outcome(api.get(f"/Task/{deleted_id}"), 410)),
            ("its deleted version", _outcome(api.get(f"/Task/{deleted_id}/_history/2"), 410)),
        ]

    g.kind("outcome 410", gone)
    g.kind(
        "outcome 406",
        lambda: [
            (
                "Accept of XML",
                _outcome(api.get("/Task", headers={"Accept": "application/fhir+xml"}), 406),
            )
        ],
    )
    g.kind(
        "outcome 412",
        lambda: [
            (
                "If-Match of an old version",
                _outcome(
                    api.put(
                        f"/Task/{task_id}",
                        json={**seed, "id": task_id},
                        headers={"If-Match": 'W/"1"'},
                    ),
                    412,
                ),
            )
        ],
    )
    g.kind(
        "outcome 413",
        lambda: [
            (
                "a body over the limit",
                _outcome(
                    api.post("/Task", json=seed_task(description="x" * (1024 * 1024 + 10))), 413
                ),
            )
        ],
    )
    g.kind(
        "outcome 414",
        lambda: [
            (
                "a URL over the limit",
                _outcome(api.get("/Task", params={"description": "a" * 8_200}), 414),
            )
        ],
    )
    g.kind(
        "outcome 415",
        lambda: [
            (
                "text/plain",
                _outcome(
                    api.post(
                        "/Task", content=orjson.dumps(seed), headers={"Content-Type": "text/plain"}
                    ),
                    415,
                ),
            )
        ],
    )
    g.kind(
        "outcome 431",
        lambda: [
            (
                "a header over the limit",
                _outcome(api.get("/Task", headers={"X-Padding": "a" * 17_000}), 431),
            ),
            (
                "too many headers",
                _outcome(api.get("/Task", headers={f"X-Extra-{i}": "x" for i in range(101)}), 431),
            ),
        ],
    )

    def business_rule() -> list[tuple[str, Body]]:
        # a status Canvas does not support: refused (422) where the profile says so, else
        # stored; either body must be valid
        response = api.post(
            "/Task", json=seed_task(status="on-hold"), headers={"Prefer": "return=representation"}
        )
        return [("a Task with status on-hold", _json(response))] if response.content else []

    g.kind("business rule", business_rule)

    json_patch = {"Content-Type": "application/json-patch+json"}

    def failed_patches() -> list[tuple[str, Body]]:
        test = [{"op": "test", "path": "/status", "value": "draft"}]
        missing = [{"op": "remove", "path": "/priority"}]
        invalid = [{"op": "remove", "path": "/requester"}]
        return [
            (
                "a failed JSON Patch test",
                _outcome(api.patch(url, json=test, headers=json_patch), 409),
            ),
            ("a path to nothing", _outcome(api.patch(url, json=missing, headers=json_patch), 422)),
            ("an invalid result", _outcome(api.patch(url, json=invalid, headers=json_patch), 422)),
        ]

    url = f"/Task/{task_id}"
    g.kind("outcome 409", lambda: failed_patches()[:1])
    g.kind("outcome 422", lambda: failed_patches()[1:])

    def validated_tasks() -> list[tuple[str, Body]]:
        invalid = {**seed, "status": "bogus", "owner": {"reference": "Patient/1"}}
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": seed},
                {"name": "mode", "valueCode": "update"},
            ],
        }
        return [
            (f"$validate of a {label}", _json(api.post("/Task/$validate", json=body), 200))
            for label, body in (
                ("valid Task", seed),
                ("invalid Task", invalid),
                ("Parameters", parameters),
            )
        ]

    g.kind("validate outcomes", validated_tasks)


def _slow_server_bodies(g: _Gatherer, engine: str, workdir: Path) -> None:
    """408 and 503 need a server with a short body timeout and search time limit."""
    try:
        with engine_database(engine, workdir) as url:
            _on_a_slow_server(g, engine, url, workdir)
    except Exception as error:  # the server did not start: both kinds say why
        for name in ("outcome 408", "outcome 503", "demo tasks exported"):
            g.kinds.setdefault(name, Kind()).error = error


def _on_a_slow_server(g: _Gatherer, engine: str, url: str, workdir: Path) -> None:
    # SQLite: a search past a tiny time limit. PostgreSQL applies the limit to every
    # statement (a tiny one stops the server's start), so there an update waits past it
    # behind a row lock
    limit = "0.001" if engine == "sqlite" else "1"
    # realistic synthetic tasks: the slow search's rows, and a variety of stored Tasks
    tasks = workdir / "tasks.ndjson"
    tasks.write_text(run_cli("demo-data", "1000").stdout)
    run_cli("migrate", "--database", url)
    # demo-data writes every FHIR status, which only the fhir profile stores
    run_cli("import", str(tasks), "--database", url, env={"CARETASK_PROFILE": "fhir"})
    g.kind(
        "demo tasks exported",
        lambda: [
            (f"caretask export of demo-data, line {n}", task)
            for n, task in enumerate(_ndjson(run_cli("export", "--database", url).stdout), 1)
        ],
    )
    env = {"CARETASK_BODY_TIMEOUT": "1", "CARETASK_SEARCH_TIMEOUT": limit}
    with Server(url, workdir, env=env) as srv:
        token = srv.token()

        def timeout() -> list[tuple[str, Body]]:
            with connect(srv) as sock:
                sock.sendall(
                    b"POST /Task HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + f"Authorization: Bearer {token}\r\n".encode()
                    + b"Content-Type: application/fhir+json\r\nContent-Length: 500\r\n\r\n{"
                )
                status, _, body = read_response(sock)
            assert status == 408, (status, body)
            return [("a body slower than the body timeout", orjson.loads(body))]

        g.kind("outcome 408", timeout)

        def unavailable() -> list[tuple[str, Body]]:
            with srv.client(token) as api:
                if engine == "sqlite":
                    # two-letter :contains values that no index serves, 128 of them
                    slow: list[tuple[str, str | int | float | bool | None]] = [
                        ("label:contains", ",".join(f"q{c}{i}" for i in range(8)))
                        for c in "abcdefghijklmnop"
                    ]
                    response = api.get("/Task", params=slow)
                    label = "a search past the search time limit"
                else:
                    import psycopg

                    task_id = create_task(api, seed_task())
                    with psycopg.connect(url) as locker:  # a transaction holding the row
                        locker.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
                        response = api.put(f"/Task/{task_id}", json={**seed_task(), "id": task_id})
                    label = "an update behind a row lock past the time limit"
                body = _outcome(response, 503)
                assert response.headers["retry-after"]
                return [(label, body)]

        g.kind("outcome 503", unavailable)


def _hostile_bodies(g: _Gatherer, engine: str, workdir: Path) -> None:
    """The answers to the hostile corpus (tests/hostile): FHIR bodies of every error the
    edge, the routes and the domain give, and searchsets of odd but valid searches. On a
    server of its own holding seed tasks: the session's server also holds what the fuzz
    tests stored, which is not what this test is about."""

    def answers() -> list[tuple[str, Body]]:
        entries = [e for e in CORPUS if not e.bug and e.expected != CLOSED]
        with (
            engine_database(engine, workdir) as url,
            Server(url, workdir) as server,
            server.client(token := server.token()) as api,
        ):
            for _ in range(3):
                create_task(api, seed_task())
            with ThreadPoolExecutor(4) as pool:  # each on its own connection, as the corpus
                sent = list(pool.map(lambda entry: send(server, entry, token), entries))
        return [
            (f"hostile {entry.name}: {answer.status}", orjson.loads(answer.body))
            for entry, answer in zip(entries, sent, strict=True)
            if answer and answer.headers.get("content-type", "").startswith(FHIR_JSON)
        ]

    g.kind("hostile corpus answers", answers)


def _cli_bodies(g: _Gatherer, server: Server, since: str) -> None:
    g.kind(
        "audit events",
        lambda: [
            (f"caretask audit --format fhir, line {n}", event)
            for n, event in enumerate(
                _ndjson(
                    run_cli(
                        "audit", "--format", "fhir", "--since", since, "--database", server.database
                    ).stdout
                ),
                1,
            )
        ],
    )
    g.kind(
        "export lines",
        lambda: [
            (f"caretask export, line {n}", task)
            for n, task in enumerate(
                _ndjson(run_cli("export", "--since", since, "--database", server.database).stdout),
                1,
            )
        ],
    )


FHIR_PROFILE = "fhir profile: "


def _fhir_profile_bodies(g: _Gatherer, engine: str, workdir: Path) -> None:
    """The same requests to a server in the fhir profile."""
    g.prefix = FHIR_PROFILE
    try:
        with (
            engine_database(engine, workdir) as url,
            Server(url, workdir, extra=("--profile", "fhir")) as srv,
            srv.client(srv.token()) as api,
        ):
            _api_bodies(g, srv, api)
    except Exception as error:  # the server did not start
        g.kinds.setdefault(FHIR_PROFILE + "server", Kind()).error = error
    finally:
        g.prefix = ""


@pytest.fixture(scope="module")
def validated(
    engine: str,
    server: Server,
    api: httpx.Client,
    token: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gathered]:
    require_node()  # before minutes of gathering for a validator that cannot run
    g = _Gatherer()
    since = _since_now()
    _api_bodies(g, server, api)
    _hostile_bodies(g, engine, tmp_path_factory.mktemp(f"validator-hostile-{engine}"))
    time.sleep(0.2)  # the audit trail is written after the answer
    _cli_bodies(g, server, since)
    _slow_server_bodies(g, engine, tmp_path_factory.mktemp(f"validator-{engine}"))
    _fhir_profile_bodies(g, engine, tmp_path_factory.mktemp(f"validator-fhir-{engine}"))
    kinds = g.validate()
    # shown with -s: the count the resolution reports
    counts = {name: len(kind.bodies) for name, kind in kinds.items()}
    print(f"\nvalidator ({engine}): {sum(counts.values())} bodies validated: {counts}")
    yield kinds


def _assert_valid(validated: Gathered, name: str) -> None:
    kind = validated[name]
    if kind.error is not None:
        raise kind.error
    assert kind.bodies, f"no {name} body was gathered"
    invalid = [
        f"{label}: {orjson.dumps(issues[:8]).decode()}\n"
        f"  body: {orjson.dumps(body).decode()[:2000]}"
        for (label, body), issues in zip(kind.bodies, kind.issues, strict=True)
        if issues
    ]
    assert not invalid, (
        # the first 20: a defect repeats in every body of its kind
        f"{len(invalid)} of {len(kind.bodies)} {name} bodies invalid:\n" + "\n".join(invalid[:20])
    )


def test_a_task_without_status_is_reported_invalid() -> None:
    # the seed has no intent (Canvas's example), which the server adds: given here
    task = seed_task(status=None, intent="order")
    [issues] = validate_all([task])
    assert [issue["expression"] for issue in issues] == [["Task.status"]]
    assert issues[0]["severity"] == "error"


def test_a_bundle_with_an_invalid_entry_is_reported_invalid() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Task", "intent": "order"}}],
    }
    [issues] = validate_all([bundle])
    assert [issue["expression"] for issue in issues] == [["Bundle.entry[0].resource.status"]]


def test_a_code_outside_its_required_value_set_is_reported_invalid() -> None:
    # the JSON schema's check: validateResource does not look at bindings
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "oops"}]}
    task = seed_task(status="paused", intent="order")
    [outcome_issues, task_issues] = validate_all([outcome, task])
    assert [issue["expression"] for issue in outcome_issues] == [["OperationOutcome.issue.0.code"]]
    assert [issue["expression"] for issue in task_issues] == [["Task.status"]]


def test_an_id_outside_the_id_pattern_is_reported_invalid() -> None:
    [issues] = validate_all([seed_task(id="not/an id", intent="order")])
    assert [issue["expression"] for issue in issues] == [["Task.id"]]


def test_an_outcome_writes_control_characters_it_quotes_escaped() -> None:
    issue = DomainIssue("structure", "unknown element 'a\x00b\x1f'\ttab", "Task.a\x00b")
    [item] = operation_outcome([issue])["issue"]
    assert item["details"] == {"text": "unknown element 'a\\u0000b\\u001f'\ttab"}
    assert item["expression"] == ["Task.a\\u0000b"]


def test_the_outcome_for_an_element_name_with_a_nul_is_valid(api: httpx.Client) -> None:
    body = orjson.dumps(seed_task())[:-1] + b', "desc\\u0000ription": "x"}'
    response = api.post("/Task", content=body, headers={"Content-Type": "application/fhir+json"})
    outcome = _outcome(response, 400)
    assert outcome["issue"][0]["details"]["text"] == "unknown element 'desc\\u0000ription'"
    assert outcome["issue"][0]["expression"] == ["Task.desc\\u0000ription"]
    assert validate_all([outcome]) == [[]]


def test_task_read(validated: Gathered) -> None:
    _assert_valid(validated, "task read")


def test_create_with_representation(validated: Gathered) -> None:
    _assert_valid(validated, "create with representation")


def test_searchset_with_entries(validated: Gathered) -> None:
    _assert_valid(validated, "searchset with entries")


def test_searchset_without_entries(validated: Gathered) -> None:
    _assert_valid(validated, "searchset without entries")


def test_include_and_revinclude(validated: Gathered) -> None:
    _assert_valid(validated, "include and revinclude")


def test_elements(validated: Gathered) -> None:
    _assert_valid(validated, "elements")


def test_summary_count(validated: Gathered) -> None:
    _assert_valid(validated, "summary count")


def test_summary_modes(validated: Gathered) -> None:
    _assert_valid(validated, "summary modes")


def test_history(validated: Gathered) -> None:
    _assert_valid(validated, "history")


def test_history_with_deletes(validated: Gathered) -> None:
    _assert_valid(validated, "history with deletes")


def test_change_feed(validated: Gathered) -> None:
    _assert_valid(validated, "change feed")


def test_outcome_410(validated: Gathered) -> None:
    _assert_valid(validated, "outcome 410")


def test_vread(validated: Gathered) -> None:
    _assert_valid(validated, "vread")


def test_batch_and_transaction_responses(validated: Gathered) -> None:
    _assert_valid(validated, "bundle responses")


def test_capability_statement(validated: Gathered) -> None:
    _assert_valid(validated, "capability statement")


@pytest.mark.parametrize(
    "status", [400, 401, 403, 404, 405, 406, 408, 409, 412, 413, 414, 415, 422, 431, 503]
)
def test_operation_outcome_of_every_error_status(validated: Gathered, status: int) -> None:
    _assert_valid(validated, f"outcome {status}")


def test_validate_operation_outcomes(validated: Gathered) -> None:
    _assert_valid(validated, "validate outcomes")


def test_business_rule_answer(validated: Gathered) -> None:
    kind = validated["business rule"]
    if kind.error is None and not kind.bodies:
        pytest.skip("the server answered without a body")
    _assert_valid(validated, "business rule")


def test_audit_events(validated: Gathered) -> None:
    _assert_valid(validated, "audit events")


def test_export_lines(validated: Gathered) -> None:
    _assert_valid(validated, "export lines")


def test_fhir_profile_bodies(validated: Gathered) -> None:
    names = [name for name in validated if name.startswith(FHIR_PROFILE)]
    assert names, "no bodies were gathered from the fhir profile's server"
    failures = []
    for name in names:
        try:
            _assert_valid(validated, name)
        except AssertionError as failure:
            failures.append(str(failure))
    assert not failures, "\n".join(failures)


def test_demo_tasks_exported(validated: Gathered) -> None:
    _assert_valid(validated, "demo tasks exported")


def test_hostile_corpus_answers(validated: Gathered) -> None:
    _assert_valid(validated, "hostile corpus answers")
