"""SPEC 8: `caretask migrate` brings a database of an older schema to the current one.

The older database is built at revision 0001 and filled the way caretask 0001 wrote it
(the rows below are frozen: they must never follow later schema changes).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import sqlalchemy as sa

from caretask.auth.secrets import hash_secret
from caretask.storage import schema
from caretask.storage.urls import DatabaseURL
from tests.support.seed import SEED_CREATE
from tests.support.server import Server, run_cli

PATIENT = "migratedpatient0001"
NOW = int(time.time() * 1_000_000)
SECRET = "old-client-secret-from-0001"
PARENT = "parent-task-0001"
CHILD = "child-task-0001"
COMPOSED, DECOMPOSED = "Caf\u00e9 visit", "Cafe\u0301 visit"


def _task(task_id: str, version: int, **changes: Any) -> dict[str, Any]:
    meta = {"versionId": str(version), "lastUpdated": "2024-05-01T10:00:00.000000+00:00"}
    return {
        **SEED_CREATE,
        "for": {"reference": f"Patient/{PATIENT}"},
        "intent": "order",
        "id": task_id,
        "meta": meta,
        **changes,
    }


def _fill_0001(url: str) -> dict[str, dict[str, Any]]:
    """Write two tasks (the child with two versions), a client and a key as 0001 did."""
    parent = _task(PARENT, 1, description="Parent task")
    child_v1 = _task(CHILD, 1, description="Child task, first version")
    child_v2 = _task(
        CHILD,
        2,
        description="Child task, second version",
        status="in-progress",
        priority="urgent",
        partOf=[{"reference": f"Task/{PARENT}"}],
        identifier=[{"system": "urn:clinic", "value": "T-42"}],
    )
    db = DatabaseURL.parse(url)
    engine = sa.create_engine(db.sqlalchemy_url(), poolclass=sa.pool.NullPool)
    columns = (
        "id, version_id, last_updated, status, intent, description, description_norm, "
        "subject_ref, subject_id, owner_ref, requester_ref, group_ref, authored_lo, "
        "authored_hi, due_lo, due_hi, resource"
    )
    group = "Group/9bf1d726-8c04-4aed-8b0e-e066f4d54b13"
    with engine.begin() as conn:
        for current, versions in ((parent, [parent]), (child_v2, [child_v1, child_v2])):
            pk = conn.execute(
                sa.text(
                    f"INSERT INTO tasks ({columns}) VALUES (:id, :v, :lu, :status, :intent,"
                    " :d, :dn, :sr, :sid, :owner, :req, :grp, 1647784800000000,"
                    " 1647784800000000, 1659326400000000, 1659326400000000, :res) RETURNING pk"
                ),
                {
                    "id": current["id"],
                    "v": len(versions),
                    "lu": NOW,
                    "status": current["status"],
                    "intent": "order",
                    "d": current["description"],
                    "dn": current["description"].lower(),
                    "sr": f"Patient/{PATIENT}",
                    "sid": PATIENT,
                    "owner": "Practitioner/3640cd20de8a470aa570a852859ac87e",
                    "req": "Practitioner/5eede137ecfe4124b8b773040e33be14",
                    "grp": group,
                    "res": json.dumps(current),
                },
            ).scalar_one()
            for version, body in enumerate(versions, start=1):
                conn.execute(
                    sa.text(
                        "INSERT INTO task_versions (task_pk, version_id, last_updated, resource) "
                        "VALUES (:pk, :v, :lu, :res)"
                    ),
                    {"pk": pk, "v": version, "lu": NOW, "res": json.dumps(body)},
                )
            conn.execute(
                sa.text(
                    "INSERT INTO task_strings (task_pk, param, norm, value) "
                    "VALUES (:pk, 'label', 'urgent', 'Urgent')"
                ),
                {"pk": pk},
            )
        conn.execute(
            sa.text(
                "INSERT INTO clients (client_id, name, secret_hash, scope, created_at) "
                "VALUES ('old-client', 'from 0001', :h, 'system/Task.*', 1700000000)"
            ),
            {"h": hash_secret(SECRET)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO signing_keys (name, secret, created_at) "
                "VALUES ('access-token', :s, 1700000000)"
            ),
            {"s": base64.b64encode(b"k" * 32).decode()},
        )
    engine.dispose()
    return {"parent": parent, "child_v1": child_v1, "child_v2": child_v2}


def _migrated_server(make_server, url: str) -> tuple[Server, httpx.Client]:  # type: ignore[no-untyped-def]
    result = run_cli("migrate", "--database", url)
    assert f"revision {schema.head_revision()}" in result.stderr
    # the fhir profile returns Tasks as stored, so they compare with what was written
    srv: Server = make_server("--profile", "fhir", database=url)
    response = httpx.post(
        f"{srv.url}/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "old-client",
            "client_secret": SECRET,
        },
    )
    assert response.status_code == 200, response.text
    return srv, srv.client(response.json()["access_token"])


def test_migrating_a_0001_database_keeps_every_task_version_and_client(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    schema.migrate(DatabaseURL.parse(fresh_database), "0001")
    stored = _fill_0001(fresh_database)
    _, client = _migrated_server(make_server, fresh_database)
    with client:
        parent = client.get(f"/Task/{PARENT}").json()
        current = client.get(f"/Task/{CHILD}")
        history = client.get(f"/Task/{CHILD}/_history").json()
        first = client.get(f"/Task/{CHILD}/_history/1").json()
    permalink = parent["extension"].pop()
    assert permalink["url"].endswith("permalink")
    assert parent == stored["parent"]
    assert current.headers["etag"] == 'W/"2"'
    assert current.json()["description"] == stored["child_v2"]["description"]
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert first["description"] == stored["child_v1"]["description"]


def test_migrated_tasks_answer_old_and_new_search_parameters(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    schema.migrate(DatabaseURL.parse(fresh_database), "0001")
    _fill_0001(fresh_database)
    _, client = _migrated_server(make_server, fresh_database)

    def ids(**params: str) -> set[str]:
        bundle = client.get("/Task", params=params).json()
        return {e["resource"]["id"] for e in bundle.get("entry", [])}

    with client:
        assert ids(patient=PATIENT) == {PARENT, CHILD}
        assert ids(patient=PATIENT, label="urgent") == {PARENT, CHILD}
        assert ids(patient=PATIENT, status="in-progress") == {CHILD}
        # the new parameters see the old tasks: migrate re-indexed them
        assert ids(patient=PATIENT, priority="urgent") == {CHILD}
        assert ids(**{"part-of": f"Task/{PARENT}"}) == {CHILD}
        assert ids(identifier="urn:clinic|T-42") == {CHILD}


def test_migrated_database_takes_new_writes(make_server, fresh_database: str) -> None:  # type: ignore[no-untyped-def]
    schema.migrate(DatabaseURL.parse(fresh_database), "0001")
    stored = _fill_0001(fresh_database)
    _, client = _migrated_server(make_server, fresh_database)
    with client:
        body = {**stored["child_v2"], "status": "completed"}
        body.pop("meta")
        updated = client.put(f"/Task/{CHILD}", json=body, headers={"If-Match": 'W/"2"'})
        created = client.post("/Task", json=SEED_CREATE)
        found = client.get("/Task", params={"_id": CHILD, "status": "completed"}).json()
    assert updated.status_code == 200
    assert updated.headers["etag"] == 'W/"3"'
    assert created.status_code == 201
    assert found["total"] == 1


def test_migrate_runs_again_without_changing_anything(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    schema.migrate(DatabaseURL.parse(fresh_database), "0001")
    _fill_0001(fresh_database)
    run_cli("migrate", "--database", fresh_database)
    again = run_cli("migrate", "--database", fresh_database)
    assert again.returncode == 0
    srv: Server = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        bundle = client.get("/Task", params={"identifier": "T-42"}).json()
    assert bundle["total"] == 1


def test_a_migration_that_fails_half_way_leaves_the_schema_as_it_was(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    url = f"sqlite:///{tmp_path / 'half.db'}"
    schema.migrate(DatabaseURL.parse(url), "0004")
    with sqlite3.connect(tmp_path / "half.db") as conn:  # in the way of 0005's second index
        conn.execute("CREATE INDEX ix_tasks_due_window ON tasks (due_lo)")
    result = run_cli("migrate", "--database", url, check=False)
    with sqlite3.connect(tmp_path / "half.db") as conn:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        first = conn.execute(
            "SELECT name FROM sqlite_master WHERE name = 'ix_tasks_authored_window'"
        ).fetchall()
    assert result.returncode != 0
    assert (revision, first) == ("0004", [])


def test_migrate_reindexes_the_tasks_that_index_version_3_indexed_differently(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    """Index version 4 reads a leap second as the end of its minute, and keeps
    the NFC form of strings for :exact."""
    run_cli("migrate", "--database", fresh_database)
    first: Server = make_server(database=fresh_database)
    token = first.token()
    with first.client(token) as client:
        leap = client.post(
            "/Task",
            json={**SEED_CREATE, "authoredOn": "2016-12-31T23:59:60Z", "description": DECOMPOSED},
        )
    leap_id = leap.headers["location"].rsplit("/", 1)[1]
    first.stop()
    # the row as index version 3 left it: the leap second ran into 2017, the string as sent
    engine = sa.create_engine(
        DatabaseURL.parse(fresh_database).sqlalchemy_url(), poolclass=sa.pool.NullPool
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE tasks SET authored_lo = :lo, authored_hi = :hi, description = :d"
                " WHERE id = :id"
            ),
            {"lo": 1483228799999999, "hi": 1483228800999998, "d": DECOMPOSED, "id": leap_id},
        )
        conn.execute(sa.text("UPDATE caretask_meta SET value = '3' WHERE key = 'index_version'"))
    engine.dispose()

    run_cli("migrate", "--database", fresh_database)
    srv: Server = make_server(database=fresh_database)
    with srv.client(token) as client:
        found = client.get("/Task", params={"_id": leap_id, "authored-on": "2016-12-31"}).json()
        exact = client.get("/Task", params={"_id": leap_id, "description:exact": COMPOSED}).json()
    assert found["total"] == 1
    assert exact["total"] == 1
