"""`caretask export` and `caretask audit` only read: they work on a database that cannot
be written and change nothing in it, and they do not migrate one that is not current."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from caretask.domain.audit import AuditRecord
from caretask.storage import open_storage, schema
from caretask.storage.urls import DatabaseURL
from tests.support.databases import POSTGRES_URL, postgres_database
from tests.support.seed import SEED_CREATE
from tests.support.server import CARETASK, run_cli

TASKS = 3


def _fill(url: str, workdir: Path) -> None:
    """A migrated database with TASKS tasks and one audit record."""
    lines = "".join(json.dumps(SEED_CREATE) + "\n" for _ in range(TASKS))
    (workdir / "tasks.ndjson").write_text(lines)
    run_cli("import", str(workdir / "tasks.ndjson"), "--database", url)
    record = AuditRecord(
        1_700_000_000_000_000, "c1", "search-type", "GET", None, None, None, None, 200
    )

    async def audit() -> None:
        storage = open_storage(DatabaseURL.parse(url))
        try:
            await storage.record_audit([record])
        finally:
            await storage.close()

    asyncio.run(audit())


@pytest.fixture
def read_only_sqlite(tmp_path: Path) -> Iterator[Path]:
    """A filled SQLite database in a folder of its own, then made read-only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    _fill(f"sqlite:///{folder / 'caretask.db'}", tmp_path)
    for leftover in folder.glob("*.migrate-lock"):
        leftover.unlink()
    assert sorted(p.name for p in folder.iterdir()) == ["caretask.db"]
    (folder / "caretask.db").chmod(0o444)
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


def _caretask_read_only(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`caretask` with `folder` unwritable: by its mode, or for root (whom modes do not
    stop) by a read-only bind mount in a mount namespace of the command's own."""
    command = [CARETASK, *args]
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("running as root without unshare: cannot make a folder read-only")
        mount = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}"'
        command = [unshare, "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if os.geteuid() == 0 and "mount" in result.stderr and result.returncode != 0:
        pytest.skip(f"cannot mount read-only here: {result.stderr.strip()}")
    return result


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_export_of_a_read_only_sqlite_database_writes_every_task_and_changes_nothing(
    read_only_sqlite: Path,
) -> None:
    before = _snapshot(read_only_sqlite)
    url = f"sqlite:///{read_only_sqlite / 'caretask.db'}"
    result = _caretask_read_only(read_only_sqlite, "export", "--database", url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"exported {TASKS} tasks\n"
    assert [json.loads(line)["resourceType"] for line in result.stdout.splitlines()] == [
        "Task"
    ] * TASKS
    assert _snapshot(read_only_sqlite) == before


def test_audit_of_a_read_only_sqlite_database_writes_every_record_and_changes_nothing(
    read_only_sqlite: Path,
) -> None:
    before = _snapshot(read_only_sqlite)
    url = f"sqlite:///{read_only_sqlite / 'caretask.db'}"
    result = _caretask_read_only(read_only_sqlite, "audit", "--database", url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "1 audit records\n"
    assert result.stdout.split("\t")[1:4] == ["c1", "-", "GET"]
    assert _snapshot(read_only_sqlite) == before


@pytest.mark.parametrize("command", ["export", "audit"])
def test_export_and_audit_of_an_unmigrated_sqlite_database_fail_in_one_line_and_create_nothing(
    command: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = run_cli(command, "--database", url, check=False)
    assert result.returncode == 1
    assert result.stderr == "caretask: the database has no schema; run `caretask migrate`\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["export", "audit"])
def test_export_and_audit_of_a_sqlite_database_at_an_older_revision_fail_in_one_line(
    command: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    schema.migrate(DatabaseURL.parse(url), "0005")
    result = run_cli(command, "--database", url, check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"caretask: the database is at schema revision 0005, expected "
        f"{schema.head_revision()}; run `caretask migrate`\n"
    )
    assert schema.current_revision(DatabaseURL.parse(url)) == "0005"


@contextmanager
def _select_only_role(url: str) -> Iterator[str]:
    """`url` as a new role that may only SELECT from the database's tables."""
    import psycopg
    from psycopg import sql

    role = f"caretask_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
    scheme, rest = url.split("://", 1)
    try:
        yield f"{scheme}://{role}@{rest.split('@', 1)[1]}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.skipif(not POSTGRES_URL, reason="CARETASK_TEST_POSTGRES_URL is not set")
def test_export_and_audit_work_for_a_postgresql_role_that_may_only_select(
    tmp_path: Path,
) -> None:
    with postgres_database() as url:
        _fill(url, tmp_path)
        with _select_only_role(url) as reader:
            exported = run_cli("export", "--database", reader)
            audited = run_cli("audit", "--database", reader)
        assert exported.stderr == f"exported {TASKS} tasks\n"
        assert len(exported.stdout.splitlines()) == TASKS
        assert audited.stderr == "1 audit records\n"
