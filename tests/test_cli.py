"""SPEC 2: the operator contract of the `caretask` command."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx

from tests.conftest import SEED_CREATE, Server, create_task, run_cli


def test_clients_create_prints_exactly_one_json_object_on_a_new_database(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'new' / 'fresh.db'}"
    result = run_cli(
        "clients", "create", "billing", "--scope", "system/Task.read", "--database", database
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert set(out) == {"client_id", "client_secret", "scope"}
    assert out["scope"] == "system/Task.read"
    assert len(out["client_secret"]) >= 32


def test_client_secret_is_stored_only_as_a_salted_slow_hash(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    secrets = [
        json.loads(run_cli("clients", "create", "a", "--database", f"sqlite:///{database}").stdout)[
            "client_secret"
        ]
        for _ in range(2)
    ]
    with sqlite3.connect(database) as conn:
        hashes = [row[0] for row in conn.execute("SELECT secret_hash FROM clients")]
        dump = "\n".join(conn.iterdump())
    assert all(h.startswith("scrypt$") for h in hashes)
    assert hashes[0].split("$")[4] != hashes[1].split("$")[4]  # different salts
    for secret in secrets:
        assert secret not in dump


def test_default_database_is_caretask_db_in_the_working_directory(tmp_path: Path) -> None:
    run_cli("clients", "create", "x", cwd=tmp_path, env={"CARETASK_DATABASE_URL": ""})
    assert (tmp_path / "caretask.db").exists()


def test_database_url_comes_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    run_cli("clients", "create", "x", env={"CARETASK_DATABASE_URL": url})
    assert (tmp_path / "env.db").exists()


def test_migrate_creates_the_schema_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    run_cli("migrate", "--database", url)
    run_cli("migrate", "--database", url)
    with sqlite3.connect(tmp_path / "m.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"tasks", "task_versions", "clients", "signing_keys"} <= tables
    assert mode == "wal" or mode == "delete"


def test_serve_refuses_a_database_newer_than_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    run_cli("migrate", "--database", url)
    with sqlite3.connect(tmp_path / "n.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    result = run_cli("serve", "--database", url, "--port", "1", check=False)
    assert result.returncode != 0
    assert "9999" in result.stderr and "upgrade caretask" in result.stderr


def test_unsupported_database_url_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("migrate", "--database", "mysql://x/y", check=False)
    assert result.returncode == 2
    assert "unsupported database URL" in result.stderr


def test_revoke_unknown_client_fails(tmp_path: Path) -> None:
    result = run_cli(
        "clients", "revoke", "nope", "--database", f"sqlite:///{tmp_path / 'r.db'}", check=False
    )
    assert result.returncode == 2


def test_base_url_sets_location_full_url_and_links(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server("--base-url", "https://tasks.example.org/fhir/")
    with srv.client(srv.token()) as client:
        created = client.post("/Task", json=SEED_CREATE)
        location = created.headers["location"]
        assert location.startswith("https://tasks.example.org/fhir/Task/")
        task_id = location.rsplit("/", 1)[1]
        bundle = client.get("/Task", params={"_id": task_id}).json()
    assert bundle["entry"][0]["fullUrl"] == f"https://tasks.example.org/fhir/Task/{task_id}"
    assert bundle["link"][0]["url"].startswith("/fhir/Task?_id=")
    permalink = bundle["entry"][0]["resource"]["extension"][-1]["valueString"]
    assert permalink.startswith("https://tasks.example.org/fhir/permalinks/v1/")


def test_two_workers_share_one_sqlite_file(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server("--workers", "2")
    with srv.client(srv.token()) as client:
        ids = {create_task(client, SEED_CREATE) for _ in range(20)}
        found = client.get("/Task", params={"_id": ",".join(ids), "_count": 100}).json()
    assert found["total"] == 20


def test_max_body_bytes_is_configurable(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server("--max-body-bytes", "1000")
    with srv.client(srv.token()) as client:
        response = client.post("/Task", json={**SEED_CREATE, "description": "x" * 2000})
    assert response.status_code == 413


def test_info_logs_carry_no_phi_or_tokens(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server()
    token = srv.token()
    secret_text, patient = "call-the-patient-about-hiv-result", "patient-phi-1234"
    with srv.client(token) as client:
        body = {
            **SEED_CREATE,
            "description": secret_text,
            "for": {"reference": f"Patient/{patient}"},
        }
        task_id = create_task(client, body)
        client.get("/Task", params={"patient": patient, "description": secret_text})
        client.put(f"/Task/{task_id}", json={**body, "status": "completed"})
        client.post("/Task", json={**body, "status": "bogus"})
    srv.stop()
    log = srv.log()
    assert "POST /Task 201" in log  # the access log is there ...
    for value in (secret_text, patient, token):  # ... but says nothing about its content
        assert value not in log


def test_a_path_that_is_not_ids_is_logged_with_its_segments_starred(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server()
    with httpx.Client(base_url=srv.url) as client:
        client.get("/Task/Mary Smith DOB 1950")
        client.get("/Task/x%0D%0AINFO:%20forged%20line")
        client.get("/Task/abc-1/_history/2")
    srv.stop()
    log = srv.log()
    assert "GET /Task/* 401" in log
    assert "Mary" not in log
    assert "forged" not in log
    assert "GET /Task/abc-1/_history/2 401" in log


def test_serve_refuses_a_setting_out_of_range(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path, env={"CARETASK_HEADER_TIMEOUT": "0"}, check=False)
    assert result.returncode == 2
    assert "CARETASK_HEADER_TIMEOUT must be greater than 0, not 0.0" in result.stderr


def test_serve_refuses_a_setting_that_is_not_a_number(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path, env={"CARETASK_BODY_TIMEOUT": "soon"}, check=False)
    assert result.returncode == 2
    assert "CARETASK_BODY_TIMEOUT: 'soon' is not a number" in result.stderr
