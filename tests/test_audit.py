"""Every request to a FHIR endpoint leaves an audit record in the database, readable with
`caretask audit`, and the records hold no search value, body or secret."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from caretask.domain.audit import AuditRecord, select
from caretask.http.audit import AuditWriter
from caretask.storage import open_storage, schema
from caretask.storage.sqlite import SQLiteStorage
from caretask.storage.urls import DatabaseURL
from tests.support.clients import create_task
from tests.support.seed import new_patient, seed_task
from tests.support.server import Server, run_cli

FAST_FLUSH = {"CARETASK_AUDIT_FLUSH_SECONDS": "0.05"}


def audit_lines(server: Server, *args: str, expect: int) -> list[list[str]]:
    """`caretask audit` as fields, once at least `expect` records have been stored (the
    server stores them every CARETASK_AUDIT_FLUSH_SECONDS)."""
    deadline = time.monotonic() + 10
    while True:
        out = run_cli("audit", "--database", server.database, *args, cwd=server.workdir).stdout
        lines = [line.split("\t") for line in out.splitlines()]
        if len(lines) >= expect or time.monotonic() > deadline:
            return lines


def what(lines: list[list[str]]) -> list[tuple[str, ...]]:
    """(method, interaction, target, query, status) of each line; when and where dropped."""
    return [(m, i, t, q, s) for _when, _who, _where, m, i, t, q, s in lines]


@pytest.fixture
def audited(make_server, fresh_database: str) -> Server:  # type: ignore[no-untyped-def]
    return make_server(database=fresh_database, env=FAST_FLUSH)


def test_every_fhir_interaction_is_recorded_with_who_what_and_outcome(audited: Server) -> None:
    client_id, token = audited.login()
    patient = new_patient()
    with audited.client(token) as api:
        task_id = create_task(api, seed_task(**{"for": {"reference": f"Patient/{patient}"}}))
        assert api.get(f"/Task/{task_id}").status_code == 200
        body = seed_task(status="completed")
        assert api.put(f"/Task/{task_id}", json=body).status_code == 200
        assert api.get(f"/Task/{task_id}/_history/1").status_code == 200
        assert api.get(f"/Task/{task_id}/_history").status_code == 200
        assert api.get("/Task", params={"patient": patient, "_count": "5"}).status_code == 200
        assert api.post("/Task/_search", data={"patient": patient}).status_code == 200
        assert api.get("/Task/no-such-task").status_code == 404
    lines = audit_lines(audited, "--client", client_id, expect=9)
    assert what(lines) == [
        ("POST", "login", "-", "-", "200"),
        ("POST", "create", f"Task/{task_id}", "-", "201"),
        ("GET", "read", f"Task/{task_id}/_history/1", "-", "200"),
        ("PUT", "update", f"Task/{task_id}/_history/2", "-", "200"),
        ("GET", "vread", f"Task/{task_id}/_history/1", "-", "200"),
        ("GET", "history-instance", f"Task/{task_id}", "-", "200"),
        ("GET", "search-type", "-", "patient=*&_count=5", "200"),
        ("POST", "search-type", "-", "patient=*", "200"),
        ("GET", "read", "Task/no-such-task", "-", "404"),
    ]
    assert {line[1] for line in lines} == {client_id}
    assert {line[2] for line in lines} == {"127.0.0.1"}


def test_patch_and_validate_are_recorded_as_patch_and_operation(audited: Server) -> None:
    client_id, token = audited.login()
    with audited.client(token) as api:
        task_id = create_task(api, seed_task())
        change = [{"op": "replace", "path": "/status", "value": "completed"}]
        headers = {"Content-Type": "application/json-patch+json"}
        assert api.patch(f"/Task/{task_id}", json=change, headers=headers).status_code == 200
        failed = [{"op": "test", "path": "/status", "value": "requested"}]
        assert api.patch(f"/Task/{task_id}", json=failed, headers=headers).status_code == 409
        assert api.post("/Task/$validate", json=seed_task()).status_code == 200
    lines = audit_lines(audited, "--client", client_id, expect=5)
    assert what(lines)[2:] == [
        ("PATCH", "patch", f"Task/{task_id}/_history/2", "-", "200"),
        ("PATCH", "patch", f"Task/{task_id}", "-", "409"),
        ("POST", "operation", "-", "-", "200"),
    ]


def test_deletes_and_the_change_feed_are_recorded_by_their_fhir_names(audited: Server) -> None:
    client_id, token = audited.login()
    with audited.client(token) as api:
        task_id = create_task(api, seed_task())
        assert api.delete(f"/Task/{task_id}").status_code == 204
        assert api.get(f"/Task/{task_id}").status_code == 410
        assert api.get("/Task/_history").status_code == 200
        assert api.get("/_history").status_code == 200
    lines = audit_lines(audited, "--client", client_id, expect=6)
    assert what(lines)[2:] == [
        ("DELETE", "delete", f"Task/{task_id}/_history/2", "-", "204"),
        ("GET", "read", f"Task/{task_id}", "-", "410"),
        ("GET", "history-type", "-", "-", "200"),
        ("GET", "history-system", "-", "-", "200"),
    ]


def test_refused_requests_are_recorded_with_their_status(audited: Server) -> None:
    client_id, _ = audited.login()
    read_only = audited.token(scope="system/Task.read")
    assert httpx.get(f"{audited.url}/Task/abc").status_code == 401
    with audited.client(read_only) as api:
        assert api.post("/Task", json=seed_task()).status_code == 403
        assert api.get("/Task", headers={"X-Padding": "a" * 17_000}).status_code == 431
    lines = audit_lines(audited, expect=6)
    refused = [(w, m, i, s) for _t, w, _a, m, i, _g, _q, s in lines if s in ("401", "403", "431")]
    assert refused[0] == ("-", "GET", "read", "401")
    assert refused[1][1:] == ("POST", "create", "403")
    assert refused[1][0] not in ("-", client_id)  # the read-only client's id
    assert refused[2] == ("-", "GET", "search-type", "431")  # refused before auth


def test_a_failed_login_records_the_client_id_it_claimed(audited: Server) -> None:
    response = httpx.post(
        f"{audited.url}/auth/token/",
        data={"grant_type": "client_credentials", "client_id": "ct_nobody", "client_secret": "x"},
    )
    assert response.status_code == 401
    lines = audit_lines(audited, "--client", "ct_nobody", expect=1)
    assert what(lines) == [("POST", "login", "-", "-", "401")]


def test_health_probes_are_not_recorded(audited: Server) -> None:
    assert httpx.get(f"{audited.url}/healthz").status_code == 200
    assert httpx.get(f"{audited.url}/readyz").status_code == 200
    assert httpx.get(f"{audited.url}/metadata").status_code == 200
    lines = audit_lines(audited, expect=2)
    # the server's own readiness poll and this test's each read /metadata
    assert {line[4] for line in lines} == {"capabilities"}


def test_the_trail_holds_no_search_value_body_or_secret(audited: Server) -> None:
    creds = audited.create_client()
    form = {"grant_type": "client_credentials", **creds}
    token = httpx.post(f"{audited.url}/auth/token/", data=form).json()["access_token"]
    patient = new_patient()
    description = f"Call {patient} about the biopsy result"
    with audited.client(token) as api:
        task_id = create_task(
            api,
            seed_task(description=description, **{"for": {"reference": f"Patient/{patient}"}}),
        )
        api.get("/Task", params={"patient": patient, "description": "biopsy"})
        api.post("/Task/_search", data={"subject": f"Patient/{patient}"})
    audit_lines(audited, expect=4)
    for fmt in ("text", "fhir"):
        out = run_cli("audit", "--format", fmt, "--database", audited.database).stdout
        assert task_id in out
        for secret in (patient, "biopsy", creds["client_secret"], token):
            assert secret not in out
            assert base64.b64encode(secret.encode()).decode()[:12] not in out


def test_audit_filters_by_client_and_since(audited: Server) -> None:
    first, _ = audited.login()
    time.sleep(0.1)
    middle = time.time()
    time.sleep(0.1)
    second, _ = audited.login()
    assert [line[1] for line in audit_lines(audited, "--client", first, expect=1)] == [first]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(middle)) + f"{middle % 1:.3f}"[1:]
    later = audit_lines(audited, "--since", since + "Z", expect=1)
    assert [line[1] for line in later] == [second]


def test_a_since_that_is_not_a_date_is_a_usage_error(audited: Server) -> None:
    result = run_cli("audit", "--since", "yesterday", "--database", audited.database, check=False)
    assert result.returncode == 2
    assert "--since: 'yesterday' is not a FHIR date or dateTime" in result.stderr


def test_the_fhir_export_is_ndjson_of_valid_r4_audit_events(audited: Server) -> None:
    client_id, token = audited.login()
    with audited.client(token) as api:
        task_id = create_task(api, seed_task())
        api.get("/Task", params={"status": "ready"})
    audit_lines(audited, "--client", client_id, expect=3)
    out = run_cli(
        "audit", "--client", client_id, "--format", "fhir", "--database", audited.database
    ).stdout
    events = [orjson.loads(line) for line in out.splitlines()]
    for event in events:
        AuditEvent.model_validate(event)
    assert [e["subtype"][0]["code"] for e in events] == ["110122", "create", "search-type"]
    assert events[1]["entity"][0]["what"] == {"reference": f"Task/{task_id}"}
    assert base64.b64decode(events[2]["entity"][0]["query"]) == b"status=*"
    ids = [tuple(int(part) for part in e["id"].split("-")) for e in events]
    assert ids == sorted(ids)  # "<batch>-<index>", in the order stored
    assert len(set(ids)) == len(ids)


def test_records_pending_at_shutdown_are_stored(make_server, fresh_database: str) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(
        database=fresh_database, env={"CARETASK_AUDIT_FLUSH_SECONDS": "600"}
    )
    client_id, token = server.login()
    with server.client(token) as api:
        for _ in range(5):
            assert api.get("/Task/nothing-here").status_code == 404
    server.stop()
    assert "Application shutdown complete" in server.log()
    assert len(audit_lines(server, "--client", client_id, expect=6)) == 6


# --- the writer, in process, against a real SQLite database --------------------------------


class CountingStorage(SQLiteStorage):
    """A real SQLite engine that counts the batches it is asked to store, and can be told
    to refuse the next ones."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.refuse = 0

    async def record_audit(self, records: Sequence[AuditRecord]) -> None:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("database unavailable")
        self.batches.append(len(records))
        await super().record_audit(records)


def _records(n: int) -> list[AuditRecord]:
    return [
        AuditRecord(1_700_000_000_000_000 + i, "ct_a", "read", "GET", f"t{i}", 1, None, None, 200)
        for i in range(n)
    ]


def _storage(tmp_path: Path) -> CountingStorage:
    url = DatabaseURL.parse(f"sqlite:///{tmp_path / 'audit.db'}")
    schema.migrate(url)
    open_storage(url)  # checks the revision, as the server does
    return CountingStorage(url.sqlite_path)


async def _stored(storage: CountingStorage) -> list[AuditRecord]:
    return list(select(await storage.audit_batches(None, None, 0, 100_000), None, None))


def test_records_are_stored_in_batches_not_a_transaction_per_request(tmp_path: Path) -> None:
    async def main() -> None:
        storage = _storage(tmp_path)
        writer = AuditWriter(storage, interval=60, batch=100)
        writer.start()
        for record in _records(250):
            writer.add(record)
        await asyncio.sleep(0.2)  # the 100th record woke the writer
        assert storage.batches and storage.batches[0] == 100
        await writer.close()
        assert sum(storage.batches) == 250
        assert len(storage.batches) <= 3
        assert [r.resource_id for r in await _stored(storage)] == [f"t{i}" for i in range(250)]
        await storage.close()

    asyncio.run(main())


def test_records_the_database_refused_are_kept_and_stored_later(tmp_path: Path) -> None:
    async def main() -> None:
        storage = _storage(tmp_path)
        writer = AuditWriter(storage, interval=60, batch=100)
        storage.refuse = 1
        for record in _records(30):
            writer.add(record)
        await writer.flush()
        assert await _stored(storage) == []
        await writer.flush()
        assert [r.resource_id for r in await _stored(storage)] == [f"t{i}" for i in range(30)]
        await storage.close()

    asyncio.run(main())


def test_past_the_pending_limit_the_oldest_records_are_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        storage = _storage(tmp_path)
        writer = AuditWriter(storage, interval=60, batch=100, max_pending=10)
        storage.refuse = 1
        for record in _records(15):
            writer.add(record)
        await writer.flush()  # refused
        await writer.flush()
        assert [r.resource_id for r in await _stored(storage)] == [f"t{i}" for i in range(5, 15)]
        await storage.close()

    asyncio.run(main())


def test_records_that_arrive_while_a_refused_batch_is_out_push_out_the_oldest(
    tmp_path: Path,
) -> None:
    class Crowded(CountingStorage):
        """Refuses the first batch after ten more records have arrived meanwhile."""

        def __init__(self, path: str, writer: list[AuditWriter]) -> None:
            super().__init__(path)
            self.writer = writer

        async def record_audit(self, records: Sequence[AuditRecord]) -> None:
            if self.refuse:
                for record in _records(40)[30:]:
                    self.writer[0].add(record)
            await super().record_audit(records)

    async def main() -> None:
        url = DatabaseURL.parse(f"sqlite:///{tmp_path / 'audit.db'}")
        schema.migrate(url)
        holder: list[AuditWriter] = []
        storage = Crowded(url.sqlite_path, holder)
        writer = AuditWriter(storage, interval=60, batch=100, max_pending=30)
        holder.append(writer)
        for record in _records(30):
            writer.add(record)
        storage.refuse = 1
        await writer.flush()  # refused, and 10 newer records came meanwhile
        await writer.flush()
        stored = [r.resource_id for r in await _stored(storage)]
        assert stored == [f"t{i}" for i in range(10, 40)]
        await storage.close()

    asyncio.run(main())


def test_a_claimed_client_id_with_a_nul_is_recorded_cleaned(audited: Server) -> None:
    form = {"grant_type": "client_credentials", "client_id": "ct_\x00evil", "client_secret": "x"}
    assert httpx.post(f"{audited.url}/auth/token/", data=form).status_code == 401
    lines = audit_lines(audited, "--client", "ct_?evil", expect=1)
    assert what(lines) == [("POST", "login", "-", "-", "401")]


def test_a_client_that_disconnects_mid_body_is_logged_and_recorded_as_499(audited: Server) -> None:
    token = audited.token()
    head = (
        "POST /Task HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", audited.port), timeout=10) as sock:
        sock.sendall(head.encode() + b'{"resourceType": "Task"')
        time.sleep(0.3)  # the handler is waiting for the rest of the body
    deadline = time.monotonic() + 10
    while " 499 " not in audited.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    access = [line for line in audited.log().splitlines() if "POST /Task " in line]
    assert len(access) == 1 and " 499 " in access[0], access
    lines = audit_lines(audited, expect=3)  # the readiness check's metadata, the login, this
    assert [(m, i, s) for _t, _w, _a, m, i, _g, _q, s in lines][-1] == ("POST", "create", "499")


def test_a_conditional_create_is_recorded_with_its_condition_redacted(audited: Server) -> None:
    client_id, token = audited.login()
    value = new_patient()
    body = seed_task(identifier=[{"system": "urn:audit", "value": value}])
    condition = {"If-None-Exist": f"identifier=urn:audit|{value}"}
    with audited.client(token) as api:
        created = api.post("/Task", json=body, headers=condition)
        found = api.post("/Task", json=body, headers=condition)
    task_id = created.headers["location"].rsplit("/", 1)[1]
    assert (created.status_code, found.status_code) == (201, 200)
    lines = audit_lines(audited, "--client", client_id, expect=3)
    assert what(lines)[1:] == [
        ("POST", "create", f"Task/{task_id}", "identifier=*", "201"),
        ("POST", "create", f"Task/{task_id}/_history/1", "identifier=*", "200"),
    ]
    assert value not in run_cli("audit", "--database", audited.database).stdout
