"""SPEC 8: NDJSON import and export, and the demo-data generator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.clients import create_task
from tests.support.seed import SEED_CREATE, seed_task
from tests.support.server import Server, run_cli


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_demo_data_is_valid_deterministic_and_spread(tmp_path: Path) -> None:
    every_status = {"CARETASK_PROFILE": "fhir"}  # canvas's profile takes three
    first = run_cli("demo-data", "500", "--seed", "7", env=every_status).stdout
    again = run_cli("demo-data", "500", "--seed", "7", env=every_status).stdout
    tasks = _lines(first)
    assert first == again
    assert len(tasks) == 500
    assert len({t["id"] for t in tasks}) == 500
    assert len({t["status"] for t in tasks}) >= 10
    assert len({t["for"]["reference"] for t in tasks}) > 300
    years = {t["authoredOn"][:4] for t in tasks}
    assert {"2021", "2022", "2023", "2024", "2025"} <= years


def test_demo_data_has_the_statuses_the_default_profile_takes() -> None:
    tasks = _lines(run_cli("demo-data", "100").stdout)
    assert {t["status"] for t in tasks} == {"requested", "cancelled", "completed"}


def test_import_loads_every_line_keeping_ids_and_is_searchable(
    make_server,
    fresh_database: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    source = tmp_path / "demo.ndjson"
    source.write_text(run_cli("demo-data", "300").stdout)
    result = run_cli("import", str(source), "--database", fresh_database)
    assert "imported 300 new and 0 updated tasks; skipped 0" in result.stderr
    first = _lines(source.read_text())[0]
    srv: Server = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        task = client.get(f"/Task/{first['id']}")
        everything = client.get("/Task", params={"_summary": "count"}).json()
        by_identifier = client.get("/Task", params={"identifier": "urn:caretask:demo|T-1-0"})
    assert task.status_code == 200
    assert task.headers["etag"] == 'W/"1"'
    assert task.json()["description"] == first["description"]
    assert everything["total"] == 300
    assert [e["resource"]["id"] for e in by_identifier.json()["entry"]] == [first["id"]]


def test_import_reports_bad_lines_by_number_and_loads_the_rest(
    fresh_database: str, tmp_path: Path
) -> None:
    source = _write(
        tmp_path / "mixed.ndjson",
        [SEED_CREATE, "{not json", {**SEED_CREATE, "status": "bogus"}, "", SEED_CREATE],
    )
    result = run_cli("import", str(source), "--database", fresh_database, check=False)
    assert result.returncode == 1
    assert "line 2: the body is not valid JSON" in result.stderr
    assert "line 3: Task.status:" in result.stderr
    reported = [line.split(":")[0] for line in result.stderr.splitlines()]
    assert [line for line in reported if line.startswith("line ")] == ["line 2", "line 3"]
    assert "imported 2 new and 0 updated tasks; skipped 2 invalid line(s)" in result.stderr


def test_strict_import_writes_nothing_when_one_line_is_bad(
    fresh_database: str, tmp_path: Path
) -> None:
    source = _write(tmp_path / "strict.ndjson", [SEED_CREATE] * 5 + [{"resourceType": "Task"}])
    result = run_cli("import", str(source), "--strict", "--database", fresh_database, check=False)
    assert result.returncode == 1
    assert "line 6:" in result.stderr
    assert "nothing was written" in result.stderr
    exported = run_cli("export", "--database", fresh_database)
    assert exported.stdout == ""


def test_export_then_import_elsewhere_round_trips_every_task(
    fresh_database: str, tmp_path: Path
) -> None:
    source = tmp_path / "demo.ndjson"
    source.write_text(run_cli("demo-data", "200", "--seed", "3").stdout)
    run_cli("import", str(source), "--database", fresh_database)
    exported = run_cli("export", "--database", fresh_database).stdout
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    (tmp_path / "export.ndjson").write_text(exported)
    run_cli("import", str(tmp_path / "export.ndjson"), "--database", copy)
    again = run_cli("export", "--database", copy).stdout

    def strip(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {t["id"]: {k: v for k, v in t.items() if k != "meta"} for t in tasks}

    assert len(_lines(exported)) == 200
    assert strip(_lines(again)) == strip(_lines(exported)) == strip(_lines(source.read_text()))


def test_importing_a_known_id_adds_a_version(fresh_database: str, tmp_path: Path) -> None:
    task = {**SEED_CREATE, "id": "bulk-known-1"}
    source = _write(tmp_path / "one.ndjson", [task])
    run_cli("import", str(source), "--database", fresh_database)
    _write(source, [{**task, "status": "completed"}, {**task, "status": "cancelled"}])
    result = run_cli("import", str(source), "--database", fresh_database)
    assert "imported 0 new and 2 updated tasks" in result.stderr
    exported = _lines(run_cli("export", "--database", fresh_database).stdout)
    assert [(t["id"], t["status"], t["meta"]["versionId"]) for t in exported] == [
        ("bulk-known-1", "cancelled", "3")
    ]


def test_export_since_keeps_only_tasks_changed_since(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    srv: Server = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        client.post("/Task", json=SEED_CREATE)
        marker = client.post("/Task", json=SEED_CREATE).headers["location"]
        since = client.get(marker).json()["meta"]["lastUpdated"]
        client.post("/Task", json=SEED_CREATE)
    exported = _lines(run_cli("export", "--since", since, "--database", fresh_database).stdout)
    assert len(exported) == 2
    assert exported[0]["id"] == marker.rsplit("/", 1)[1]


def test_export_since_must_be_a_date(fresh_database: str) -> None:
    result = run_cli("export", "--since", "yesterday", "--database", fresh_database, check=False)
    assert result.returncode == 2
    assert "--since" in result.stderr


def test_import_reads_standard_input(fresh_database: str, tmp_path: Path) -> None:
    import subprocess

    from tests.support.server import CARETASK

    data = json.dumps(SEED_CREATE) + "\n"
    result = subprocess.run(
        [CARETASK, "import", "-", "--database", fresh_database],
        input=data,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "imported 1 new" in result.stderr


def _schema(url: str) -> tuple[set[tuple[str, str]], str | None]:
    """The task tables' index definitions and (SQLite) the journal mode, read directly."""
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(
                "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL"
            ).fetchall()
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return set(rows), mode
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        ).fetchall()
    return set(rows), None


def test_import_into_an_empty_database_rebuilds_every_index_it_deferred(
    make_server,
    fresh_database: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    run_cli("migrate", "--database", fresh_database)
    before, _ = _schema(fresh_database)
    source = tmp_path / "demo.ndjson"
    source.write_text(run_cli("demo-data", "200").stdout)
    run_cli("import", str(source), "--database", fresh_database)
    after, mode = _schema(fresh_database)
    assert after == before
    assert len(before) >= 20
    assert mode in (None, "wal")
    first = _lines(source.read_text())[0]
    word = max(first["description"].split(), key=len)[1:5]  # 4 letters: the trigram index
    srv: Server = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        found = client.get("/Task", params={"description:contains": word, "_count": "200"})
    assert found.status_code == 200
    assert first["id"] in {e["resource"]["id"] for e in found.json()["entry"]}


def test_an_aborted_import_into_an_empty_database_keeps_every_index(
    fresh_database: str, tmp_path: Path
) -> None:
    run_cli("migrate", "--database", fresh_database)
    before, _ = _schema(fresh_database)
    source = _write(tmp_path / "strict.ndjson", [SEED_CREATE] * 3 + ["{"])
    result = run_cli("import", str(source), "--strict", "--database", fresh_database, check=False)
    assert result.returncode == 1
    after, mode = _schema(fresh_database)
    assert after == before
    assert mode in (None, "wal")


def test_import_into_a_database_with_tasks_keeps_its_indexes(
    fresh_database: str, tmp_path: Path
) -> None:
    source = _write(tmp_path / "one.ndjson", [SEED_CREATE])
    run_cli("import", str(source), "--database", fresh_database)
    before, _ = _schema(fresh_database)
    run_cli("import", str(source), "--database", fresh_database)
    after, mode = _schema(fresh_database)
    assert after == before
    assert mode in (None, "wal")
    assert len(_lines(run_cli("export", "--database", fresh_database).stdout)) == 2


def _history(client: Any, task_id: str) -> list[dict[str, Any]]:
    """Every version of a task, oldest first, without the fields a write sets afresh."""
    bundle = client.get(f"/Task/{task_id}/_history", params={"_count": "100"}).json()
    out = []
    for entry in reversed(bundle["entry"]):
        resource = {k: v for k, v in entry["resource"].items() if k not in ("id", "extension")}
        # the permalink extension is made from the id
        resource["extension"] = entry["resource"]["extension"][:1]
        resource["meta"] = {k: v for k, v in resource["meta"].items() if k != "lastUpdated"}
        out.append(resource)
    return out


def _contains(client: Any, text: str) -> list[str]:
    found = client.get("/Task", params={"description:contains": text, "_count": "100"}).json()
    return [e["resource"]["id"] for e in found.get("entry", [])]


def test_ids_repeated_in_an_import_into_an_empty_database_become_versions_like_puts(
    make_server,
    fresh_database: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    note = {k: v for k, v in SEED_CREATE["note"][0].items() if k != "time"}
    first = seed_task(id="bulk-repeat-x", description="Call the pharmacy about refills")
    # no authoredOn and a note without a time: PUT keeps both from the previous version
    second = seed_task(
        id="bulk-repeat-x", description="Café visit follow-up", authoredOn=None, note=[note]
    )
    third = seed_task(id="bulk-repeat-x", description="CAFE VISIT FOLLOW-UP", status="completed")
    other = seed_task(id="bulk-repeat-y", description="Fax the referral letter")
    source = _write(tmp_path / "repeats.ndjson", [first, other, second, other, third])
    result = run_cli("import", str(source), "--database", fresh_database)
    assert "imported 2 new and 3 updated tasks; skipped 0 invalid line(s)" in result.stderr
    srv: Server = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        put_id = create_task(client, {k: v for k, v in first.items() if k != "id"})
        for body in (second, third):
            assert client.put(f"/Task/{put_id}", json={**body, "id": put_id}).status_code == 200
        imported, by_put = _history(client, "bulk-repeat-x"), _history(client, put_id)
        assert [v["meta"]["versionId"] for v in imported] == ["1", "2", "3"]
        assert [v["description"] for v in imported] == [
            first["description"],
            second["description"],
            third["description"],
        ]
        assert imported == by_put
        assert [v["meta"]["versionId"] for v in _history(client, "bulk-repeat-y")] == ["1", "2"]
        assert _contains(client, "pharmacy") == []
        assert sorted(_contains(client, "cafe visit")) == sorted(["bulk-repeat-x", put_id])
        assert _contains(client, "referral") == ["bulk-repeat-y"]
        prefix = client.get("/Task", params={"description": "call the", "_count": "100"})
        assert prefix.json()["total"] == 0


def test_an_id_repeated_three_times_leaves_a_consistent_text_index(
    fresh_database: str, tmp_path: Path
) -> None:
    task = seed_task(id="bulk-repeat-z", description="Renew the prior authorization")
    changed = {**task, "description": "Book the follow-up visit"}
    source = _write(tmp_path / "three.ndjson", [task, changed, {**task, "status": "completed"}])
    # into the empty database (indexes built at the end), then into one with the task
    for created, updated, version in ((1, 2, "3"), (0, 3, "6")):
        result = run_cli("import", str(source), "--database", fresh_database)
        expected = f"imported {created} new and {updated} updated tasks; skipped 0 invalid line(s)"
        assert expected in result.stderr
        exported = _lines(run_cli("export", "--database", fresh_database).stdout)
        assert [(t["id"], t["status"], t["meta"]["versionId"]) for t in exported] == [
            ("bulk-repeat-z", "completed", version)
        ]
        if fresh_database.startswith("sqlite"):
            import sqlite3

            with sqlite3.connect(fresh_database.removeprefix("sqlite:///")) as conn:
                # FTS5 checks its index against the content table (tasks): an error if unequal
                check = "INSERT INTO task_text (task_text, rank) VALUES ('integrity-check', 1)"
                conn.execute(check)
                rows = conn.execute(
                    "SELECT rowid FROM task_text WHERE description_norm LIKE '%follow%'"
                ).fetchall()
            assert rows == []


def test_importing_a_known_id_stamps_it_over_the_stored_version_as_put_does(
    fresh_database: str, tmp_path: Path
) -> None:
    task = seed_task(id="bulk-known-2")
    run_cli("import", str(_write(tmp_path / "first.ndjson", [task])), "--database", fresh_database)
    note = {k: v for k, v in SEED_CREATE["note"][0].items() if k != "time"}
    again = seed_task(id="bulk-known-2", authoredOn=None, note=[note], status="completed")
    source = _write(tmp_path / "again.ndjson", [again])
    result = run_cli("import", str(source), "--database", fresh_database)
    assert "imported 0 new and 1 updated tasks" in result.stderr
    [stored] = _lines(run_cli("export", "--database", fresh_database).stdout)
    assert stored["meta"]["versionId"] == "2"
    assert stored["status"] == "completed"
    assert stored["authoredOn"] == SEED_CREATE["authoredOn"]
    assert stored["note"][0]["time"] == SEED_CREATE["note"][0]["time"]


def _import_peak(database: str, source: Path) -> tuple[int, str, int]:
    """Run `caretask import`: its exit status, its stderr, and the peak resident memory in
    KiB of it and its worker processes (wait4 reports the largest of them)."""
    import os
    import subprocess

    from tests.support.server import CARETASK

    log = source.with_suffix(".log")
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [CARETASK, "import", str(source), "--database", database],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, log.read_text(), usage.ru_maxrss


def test_import_refuses_a_line_over_the_body_limit_without_holding_it(
    fresh_database: str, tmp_path: Path
) -> None:
    huge = json.dumps(seed_task(description="x" * (24 * 1024 * 1024)))
    plain = json.dumps(SEED_CREATE)
    source = _write(tmp_path / "huge.ndjson", [plain, huge, plain])
    code, stderr, peak = _import_peak(fresh_database, source)
    assert code == 1
    assert "line 2: the body is larger than 1048576 bytes" in stderr
    assert "imported 2 new and 0 updated tasks; skipped 1 invalid line(s)" in stderr
    _, _, baseline = _import_peak(fresh_database, _write(tmp_path / "plain.ndjson", [plain]))
    assert peak - baseline < 12 * 1024  # KiB: the 24 MiB line was never read whole


def test_import_holds_lines_to_the_body_limit_setting_or_the_line_option(
    fresh_database: str, tmp_path: Path
) -> None:
    line = json.dumps(seed_task(description="y" * 3000))
    source = _write(tmp_path / "long.ndjson", [line])
    size = str(len(line.encode()))
    at_limit = {"CARETASK_MAX_BODY_BYTES": size}
    below = {"CARETASK_MAX_BODY_BYTES": str(len(line.encode()) - 1)}
    refused = run_cli("import", str(source), "--database", fresh_database, env=below, check=False)
    assert refused.returncode == 1
    assert f"line 1: the body is larger than {int(size) - 1} bytes" in refused.stderr
    option = run_cli(
        "import", str(source), "--max-line-bytes", size, "--database", fresh_database, env=below
    )
    assert "imported 1 new" in option.stderr
    accepted = run_cli("import", str(source), "--database", fresh_database, env=at_limit)
    assert "imported 1 new" in accepted.stderr


def test_strict_import_aborts_on_a_line_over_the_body_limit(
    fresh_database: str, tmp_path: Path
) -> None:
    huge = json.dumps(seed_task(description="z" * (2 * 1024 * 1024)))
    source = _write(tmp_path / "strict-huge.ndjson", [SEED_CREATE, huge, SEED_CREATE])
    result = run_cli("import", str(source), "--strict", "--database", fresh_database, check=False)
    assert result.returncode == 1
    assert "line 2: the body is larger than 1048576 bytes" in result.stderr
    assert "nothing was written" in result.stderr
    assert run_cli("export", "--database", fresh_database).stdout == ""


def test_import_refuses_a_repeated_key_with_the_words_of_post(
    make_server,
    fresh_database: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    plain = json.dumps(SEED_CREATE)
    repeated = plain[:-1] + ', "status": "completed"}'
    source = _write(tmp_path / "repeated.ndjson", [repeated, plain])
    result = run_cli("import", str(source), "--database", fresh_database, check=False)
    srv: Server = make_server(database=fresh_database)
    with srv.client(srv.token()) as client:
        posted = client.post(
            "/Task", content=repeated, headers={"Content-Type": "application/fhir+json"}
        )
        total = client.get("/Task", params={"_summary": "count"}).json()["total"]
    assert posted.status_code == 400
    assert result.returncode == 1
    assert f"line 1: {posted.json()['issue'][0]['details']['text']}\n" in result.stderr
    assert "imported 1 new and 0 updated tasks; skipped 1 invalid line(s)" in result.stderr
    assert total == 1
