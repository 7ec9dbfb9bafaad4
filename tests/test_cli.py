"""SPEC 2: the operator contract of the `caretask` command."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.clients import create_task
from tests.support.seed import SEED_CREATE
from tests.support.server import CARETASK, Server, run_cli


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


# --- every failure is one line --------------------------------------------------------------
# Each bad input below must end the command with one line on stderr, `caretask: ...`, exit 2
# for a usage error and 1 otherwise, and never a traceback. As root, file modes do not bind,
# so the commands run without CAP_DAC_OVERRIDE (setpriv), as any other user would.

UNDECODABLE = b"\xff".decode("utf-8", "surrogateescape")  # what Python makes of argv byte 0xff


def _as_a_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file modes cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _caretask(*args: str, cwd: Path, shell: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [*_as_a_user(), CARETASK, *args]
    if shell is not None:  # a redirection around the command
        command = ["bash", "-c", f"{shlex.join(command)} {shell}"]
    return subprocess.run(
        command, capture_output=True, text=True, errors="replace", cwd=cwd, timeout=60
    )


def _fails_in_one_line(result: subprocess.CompletedProcess[str], status: int, says: str) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("caretask: ") and says in lines[0], lines[0]


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """SQLite databases that cannot be used, by what is wrong with them."""
    tmp_path = tmp_path_factory.mktemp("unusable")
    run_cli("migrate", "--database", f"sqlite:///{tmp_path / 'read-only.db'}")
    (tmp_path / "read-only.db").chmod(0o444)
    (tmp_path / "folder").mkdir()
    run_cli("migrate", "--database", f"sqlite:///{tmp_path / 'folder' / 'in.db'}")
    (tmp_path / "folder").chmod(0o555)
    (tmp_path / "a-file").touch()
    (tmp_path / "a-directory.db").mkdir()
    return {
        "a read-only file": f"sqlite:///{tmp_path / 'read-only.db'}",
        "a read-only folder": f"sqlite:///{tmp_path / 'folder' / 'in.db'}",
        "a new file in a read-only folder": f"sqlite:///{tmp_path / 'folder' / 'new.db'}",
        "a directory": f"sqlite:///{tmp_path / 'a-directory.db'}",
        "a file as its folder": f"sqlite:///{tmp_path / 'a-file' / 'x.db'}",
    }


WRITING_COMMANDS = {
    "serve": ["serve", "--port", "1"],
    "clients create": ["clients", "create", "x"],
    "clients revoke": ["clients", "revoke", "x"],
    "import": ["import", os.devnull],
}
DATABASE_FAULTS = {
    "a read-only file": "attempt to write a readonly database",
    "a read-only folder": "attempt to write a readonly database",
    "a new file in a read-only folder": "Permission denied",
    "a directory": "unable to open database file",
    "a file as its folder": "Not a directory",
}


@pytest.mark.parametrize("fault", DATABASE_FAULTS)
@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_a_database_that_cannot_be_written_is_one_line_and_exit_1(
    command: str, fault: str, databases: dict[str, str], tmp_path: Path
) -> None:
    args = [*WRITING_COMMANDS[command], "--database", databases[fault]]
    _fails_in_one_line(_caretask(*args, cwd=tmp_path), 1, DATABASE_FAULTS[fault])


def test_serve_finds_a_read_only_database_before_starting_uvicorn(
    databases: dict[str, str], tmp_path: Path
) -> None:
    args = ["serve", "--workers", "2", "--database", databases["a read-only file"]]
    result = _caretask(*args, cwd=tmp_path)
    _fails_in_one_line(result, 1, "read-only.db: OperationalError: attempt to write a readonly")
    assert "Started" not in result.stderr and "uvicorn" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "migrate", "clients create", "audit", "export"])
def test_an_unreachable_postgresql_is_one_line_without_the_password(
    command: str, tmp_path: Path
) -> None:
    args = {**WRITING_COMMANDS, "migrate": ["migrate"], "audit": ["audit"], "export": ["export"]}
    url = "postgresql://caretask:hunter2secret@127.0.0.1:1/tasks"
    result = _caretask(*args[command], "--database", url, cwd=tmp_path)
    _fails_in_one_line(result, 1, "database 127.0.0.1:1/tasks: OperationalError: connection")
    assert "hunter2secret" not in result.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:", "must start with sqlite:/// or postgresql://"),
        ("caretask.db", "must start with sqlite:/// or postgresql://"),
        ("postgresql://[::1/x", "malformed database URL: Invalid IPv6 URL"),
        ("postgresql://u:pw@host:port/x", "malformed database URL: Port could not be cast"),
        ("postgresql://u@host:99999/x", "malformed database URL: Port out of range"),
        ("sqlite:///" + UNDECODABLE, "'sqlite:///\\xff' is not valid UTF-8"),
    ],
)
def test_a_malformed_database_url_is_a_usage_error_in_one_line(
    url: str, says: str, tmp_path: Path
) -> None:
    _fails_in_one_line(_caretask("migrate", "--database", url, cwd=tmp_path), 2, says)


@pytest.mark.parametrize(
    "args",
    [
        ["clients", "create", UNDECODABLE],
        ["clients", "create", "x", "--scope", UNDECODABLE],
        ["clients", "revoke", UNDECODABLE],
        ["audit", "--client", UNDECODABLE],
        ["audit", "--since", UNDECODABLE],
        ["export", "--since", UNDECODABLE],
        ["serve", "--base-url", UNDECODABLE],
        ["serve", "--host", UNDECODABLE],
    ],
    ids=lambda args: " ".join(a for a in args if a != UNDECODABLE),
)
def test_an_argument_that_is_not_utf8_is_a_usage_error_in_one_line(
    args: list[str], tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'ok.db'}"
    result = _caretask(*args, "--database", database, cwd=tmp_path)
    _fails_in_one_line(result, 2, "'\\xff' is not valid UTF-8")
    assert not (tmp_path / "ok.db").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--port", "70000"], "port: 70000 is out of range (from 0 to 65535)"),
        (["serve", "--port", "x"], "argument --port: invalid int value: 'x'"),
        (["serve", "--workers", "0"], "workers: 0 is out of range"),
        (["serve", "--log-level", "loud"], "--log-level: choose from critical"),
        (["demo-data", "-5"], "count: -5 is out of range"),
        (["clients", "create"], "the following arguments are required: name"),
        ([], "the following arguments are required: command"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path) -> None:
    _fails_in_one_line(_caretask(*args, cwd=tmp_path), 2, says)


def test_serve_on_a_busy_port_is_one_line_before_starting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        database = f"sqlite:///{tmp_path / 'ok.db'}"
        result = _caretask("serve", "--port", port, "--database", database, cwd=tmp_path)
    _fails_in_one_line(result, 1, f"cannot listen on 127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("missing.ndjson", "missing.ndjson: No such file or directory"),
        (UNDECODABLE, "\\xff: No such file or directory"),
        (".", ".: Is a directory"),
    ],
    ids=["missing", "not-utf8-name", "directory"],
)
def test_import_of_a_file_that_cannot_be_read_is_one_line(
    name: str, says: str, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'ok.db'}"
    _fails_in_one_line(_caretask("import", name, "--database", database, cwd=tmp_path), 1, says)


@pytest.mark.parametrize(
    ("args", "redirect", "says"),
    [
        (["export"], ">&-", "standard output is closed"),
        (["clients", "create", "x"], ">&-", "standard output is closed"),
        (["demo-data", "10"], ">/dev/full", "No space left on device"),
        (["clients", "create", "x"], ">/dev/full", "cannot print the new client's secret"),
        (["import", "-"], "<&-", "standard input is closed"),
    ],
    ids=["export-closed", "create-closed", "demo-full", "create-full", "import-stdin-closed"],
)
def test_an_unusable_stdin_or_stdout_is_one_line(
    args: list[str], redirect: str, says: str, tmp_path: Path
) -> None:
    if args[0] != "demo-data":
        args = [*args, "--database", f"sqlite:///{tmp_path / 'ok.db'}"]
    _fails_in_one_line(_caretask(*args, cwd=tmp_path, shell=redirect), 1, says)


@pytest.mark.parametrize("args", [["demo-data", "20000"], ["export"]], ids=["demo", "export"])
def test_a_reader_that_stops_early_is_not_an_error(args: list[str], tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'ok.db'}"
    if args[0] == "export":
        tasks = run_cli("demo-data", "3000").stdout
        subprocess.run(
            [CARETASK, "import", "-", "--database", database],
            input=tasks,
            text=True,
            capture_output=True,
            check=True,
        )
        args = [*args, "--database", database]
    result = _caretask(*args, cwd=tmp_path, shell="| head -c 10 >/dev/null; exit ${PIPESTATUS[0]}")
    assert result.returncode == 0 and result.stderr == "", result.stderr
