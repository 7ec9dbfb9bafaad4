"""`caretask import` reads a line as POST /Task and PUT read a body: one pipeline
(caretask.service), so the two cannot drift apart.

Specification: every request body of the hostile corpus that POST /Task refuses with a 4xx is
refused by an import too, with the same OperationOutcome issues (code, text, expression) and
nothing written; a body repeating "status" is refused by both alike; and a line naming a known
id is stamped over the stored version as a PUT stamps its body (authoredOn and the times of
notes sent without one are kept).
"""

from __future__ import annotations

import io
import json
from typing import Any

from caretask.bulk.ndjson import LineError, import_ndjson, prepare
from caretask.config import Settings
from caretask.domain.dates import now_instant
from caretask.domain.outcome import operation_outcome
from caretask.service.tasks import BodyLimits
from caretask.storage.urls import DatabaseURL
from tests.hostile.corpus import CORPUS
from tests.support.clients import create_task
from tests.support.seed import SEED_CREATE, seed_task
from tests.support.server import Server

JSON = {"Content-Type": "application/fhir+json"}
Issues = list[tuple[str, str, str | None]]


def _create_bodies() -> list[bytes]:
    """Every distinct body the corpus sends to POST /Task, in corpus order. A body that is
    blank is left out: to an import a blank line is no task at all, not a refused one."""
    bodies: dict[bytes, None] = {}
    for entry in CORPUS:
        body = entry.body
        if entry.method == "POST" and entry.path == "/Task" and body is not None and body.strip():
            bodies[body] = None
    return list(bodies)


def _outcome_issues(outcome: dict[str, Any]) -> Issues:
    assert outcome["resourceType"] == "OperationOutcome"
    return [
        (i["code"], i["details"]["text"], (i.get("expression") or [None])[0])
        for i in outcome["issue"]
    ]


def _line_issues(error: LineError) -> Issues:
    """The line's issues as the API writes them (an OperationOutcome escapes control
    characters that a refused body quoted)."""
    return _outcome_issues(operation_outcome(list(error.issues)))


def _import(url: str, lines: list[bytes]) -> tuple[int, int, dict[int, LineError]]:
    """Import `lines` as `caretask import` does (the limits a request body is held to):
    (tasks created, tasks updated, the refused lines by number). No server may have the
    database open: an import into an empty SQLite database changes its journal mode."""
    settings = Settings.from_env()
    refused: dict[int, LineError] = {}

    def on_error(error: LineError) -> None:
        refused[error.line] = error

    report = import_ndjson(
        DatabaseURL.parse(url),
        io.BytesIO(b"".join(line + b"\n" for line in lines)),
        max_line_bytes=settings.max_body_bytes,
        max_depth=settings.max_json_depth,
        workers=1,
        on_error=on_error,
    )
    return report.created, report.updated, refused


def test_every_hostile_create_body_the_api_refuses_is_refused_by_import_alike(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    srv: Server = make_server(database=fresh_database)
    refused_by_api: dict[bytes, tuple[int, Issues]] = {}
    with srv.client(srv.token()) as client:
        for body in _create_bodies():
            response = client.post("/Task", content=body, headers=JSON)
            if 400 <= response.status_code < 500:
                issues = _outcome_issues(response.json())
                refused_by_api[body] = (response.status_code, issues)
    srv.stop()
    statuses = {status for status, _ in refused_by_api.values()}
    assert statuses == {400, 413}

    # NDJSON cannot hold a body with a raw newline on one line: those go to the import's
    # reading of one line (bulk.ndjson.prepare) directly
    whole = [body for body in refused_by_api if b"\n" not in body]
    created, updated, refused = _import(fresh_database, whole)
    assert (created, updated) == (0, 0)
    assert sorted(refused) == list(range(1, len(whole) + 1))
    mismatched = [
        (body[:60], refused_by_api[body][1], _line_issues(refused[number]))
        for number, body in enumerate(whole, start=1)
        if _line_issues(refused[number]) != refused_by_api[body][1]
    ]
    assert mismatched == []

    settings = Settings.from_env()
    limits = BodyLimits(settings.max_body_bytes, settings.max_json_depth)
    now, now_us = now_instant()
    split = [body for body in refused_by_api if b"\n" in body]
    assert split
    for body in split:
        rows, errors = prepare([(1, body)], now, now_us, limits)
        assert rows == []
        assert [_line_issues(e) for e in errors] == [refused_by_api[body][1]]


def test_a_body_giving_status_twice_is_refused_by_import_as_by_post(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    seed = json.dumps(SEED_CREATE)
    twice = seed.replace('"status": "requested"', '"status": "requested", "status": "bogus"')
    assert twice != seed
    srv: Server = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        response = client.post("/Task", content=twice.encode(), headers=JSON)
    srv.stop()
    assert response.status_code == 400
    assert _outcome_issues(response.json()) == [
        ("structure", "the body repeats a key within one JSON object; FHIR JSON does not", None)
    ]
    created, updated, refused = _import(fresh_database, [twice.encode()])
    assert (created, updated) == (0, 0)
    assert [_line_issues(e) for e in refused.values()] == [_outcome_issues(response.json())]
    assert refused[1].text == "the body repeats a key within one JSON object; FHIR JSON does not"


def _as_stored(resource: dict[str, Any]) -> dict[str, Any]:
    """A version without what differs between two tasks made alike: the id, the time of the
    write and the permalink made from the id."""
    out = {k: v for k, v in resource.items() if k not in ("id", "extension")}
    out["extension"] = resource["extension"][:1]
    out["meta"] = {k: v for k, v in resource["meta"].items() if k != "lastUpdated"}
    return out


def test_an_imported_known_id_is_stamped_over_its_previous_version_like_put(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    note = {k: v for k, v in SEED_CREATE["note"][0].items() if k != "time"}
    # no authoredOn and a note without its time: PUT keeps both from the previous version
    second = seed_task(authoredOn=None, note=[note], status="completed")
    srv: Server = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        put_id = create_task(client, SEED_CREATE)
        imported_id = create_task(client, SEED_CREATE)
        assert client.put(f"/Task/{put_id}", json={**second, "id": put_id}).status_code == 200
    srv.stop()
    line = json.dumps({**second, "id": imported_id}).encode()
    assert _import(fresh_database, [line]) == (0, 1, {})
    srv = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        put = client.get(f"/Task/{put_id}").json()
        imported = client.get(f"/Task/{imported_id}").json()
    assert imported["meta"]["versionId"] == put["meta"]["versionId"] == "2"
    assert imported["authoredOn"] == SEED_CREATE["authoredOn"]
    assert imported["note"][0]["time"] == SEED_CREATE["note"][0]["time"]
    assert _as_stored(imported) == _as_stored(put)
