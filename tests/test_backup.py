"""Issue 18: `caretask backup DEST` copies a running SQLite database with SQLite's backup API
(one consistent snapshot while the server keeps writing), and `caretask restore BACKUP`
copies one back; PostgreSQL is refused with a pointer to its own tools."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from pathlib import Path

from tests.support.seed import seed_task
from tests.support.server import Server, run_cli

VERSIONS = (
    "SELECT t.id, v.version_id, v.resource FROM task_versions v "
    "JOIN tasks t ON t.pk = v.task_pk ORDER BY t.id, v.version_id"
)


def _write_load(
    srv: Server, token: str, stop: threading.Event, acked: list[tuple[str, float]]
) -> None:
    """Creates, and updates of what it created, until `stop`; each acknowledged create
    with the time its 201 came."""
    mine: list[str] = []
    with srv.client(token) as api:
        while not stop.is_set():
            if mine and random.random() < 0.3:
                task = random.choice(mine)
                current = api.get(f"/Task/{task}").json()
                current["description"] = f"changed {time.monotonic()}"
                assert api.put(f"/Task/{task}", json=current).status_code == 200
                continue
            response = api.post("/Task", json=seed_task())
            assert response.status_code == 201, response.text
            task = response.headers["location"].rsplit("/", 1)[1]
            mine.append(task)
            acked.append((task, time.monotonic()))


def test_a_backup_under_writes_holds_every_earlier_write_and_only_what_was_written(
    make_server,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    srv: Server = make_server()
    token = srv.token()
    stop, acked = threading.Event(), []  # type: ignore[var-annotated]
    writers = [
        threading.Thread(target=_write_load, args=(srv, token, stop, acked)) for _ in range(3)
    ]
    for writer in writers:
        writer.start()
    time.sleep(1.5)
    started = time.monotonic()
    destination = tmp_path / "backups" / "copy.db"
    destination.parent.mkdir()
    out = run_cli("backup", str(destination), "--database", srv.database)
    time.sleep(0.5)
    stop.set()
    for writer in writers:
        writer.join()

    report = json.loads(out.stdout)
    assert list(destination.parent.iterdir()) == [destination]  # no partial file left
    copy = sqlite3.connect(destination)
    ids = {row[0] for row in copy.execute("SELECT id FROM tasks")}
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert report["path"] == str(destination)
    assert report["tasks"] == len(ids)
    assert {t for t, at in acked if at < started} <= ids  # every write acknowledged before
    assert ids <= {t for t, _ in acked}  # and nothing that was not written
    live = sqlite3.connect(srv.database.removeprefix("sqlite:///"))
    kept = copy.execute(VERSIONS).fetchall()
    live_versions = {(i, v): body for i, v, body in live.execute(VERSIONS)}
    assert all(live_versions[(i, v)] == body for i, v, body in kept)  # as stored, byte for byte


def test_a_restored_backup_serves_the_same_tasks(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server()
    with srv.client(srv.token()) as api:
        made = [
            api.post("/Task", json=seed_task(description=f"task {i}")).headers["location"]
            for i in range(30)
        ]
    backup_file = tmp_path / "b.db"
    run_cli("backup", str(backup_file), "--database", srv.database)
    srv.stop()
    restored_db = f"sqlite:///{tmp_path / 'restored' / 'caretask.db'}"
    out = json.loads(run_cli("restore", str(backup_file), "--database", restored_db).stdout)
    assert out["tasks"] == 30
    restored: Server = make_server(database=restored_db, workdir=tmp_path)
    with restored.client(restored.token()) as api:
        for location in made:
            task_id = location.rsplit("/", 1)[1]
            response = api.get(f"/Task/{task_id}")
            assert response.status_code == 200
            assert response.headers["etag"] == 'W/"1"'
        assert api.get("/Task", params={"_summary": "count"}).json()["total"] == 30


def test_a_backup_never_overwrites_a_file(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'a.db'}"
    run_cli("migrate", "--database", database)
    (tmp_path / "taken.db").write_bytes(b"precious")
    result = run_cli("backup", str(tmp_path / "taken.db"), "--database", database, check=False)
    assert result.returncode == 1
    assert result.stderr == f"caretask: {tmp_path / 'taken.db'} exists: give a new file name\n"
    assert (tmp_path / "taken.db").read_bytes() == b"precious"


def test_a_restore_over_a_database_that_exists_needs_force(tmp_path: Path) -> None:
    database = tmp_path / "a.db"
    run_cli("migrate", "--database", f"sqlite:///{database}")
    run_cli("backup", str(tmp_path / "b.db"), "--database", f"sqlite:///{database}")
    refused = run_cli(
        "restore", str(tmp_path / "b.db"), "--database", f"sqlite:///{database}", check=False
    )
    assert refused.returncode == 1
    assert "exists: stop its servers and add --force" in refused.stderr
    forced = run_cli(
        "restore", str(tmp_path / "b.db"), "--force", "--database", f"sqlite:///{database}"
    )
    assert json.loads(forced.stdout)["tasks"] == 0


def test_a_file_that_is_no_database_is_not_restored(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    result = run_cli(
        "restore",
        str(tmp_path / "junk.db"),
        "--database",
        f"sqlite:///{tmp_path / 'n.db'}",
        check=False,
    )
    assert result.returncode == 1
    assert "is not a sound SQLite database" in result.stderr
    assert not (tmp_path / "n.db").exists()


def test_backup_of_postgresql_points_to_its_own_tools(tmp_path: Path) -> None:
    result = run_cli("backup", "x.db", "--database", "postgresql://u@127.0.0.1:1/x", check=False)
    assert result.returncode == 2
    assert "back up PostgreSQL with pg_dump or a base backup" in result.stderr
