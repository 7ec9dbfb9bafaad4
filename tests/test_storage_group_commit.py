"""Group commit (storage.sqlite.group_commit): writes queued together share one durable COMMIT,
each succeeds or fails alone, and none is reported done before its COMMIT returned."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from caretask.storage.sqlite.group_commit import GroupCommitWriter


class Traced:
    """Real SQLite connections to one file, with SQLite's statement trace recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.statements: list[str] = []
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE items (name TEXT PRIMARY KEY)")

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")
        conn.set_trace_callback(self.statements.append)
        return conn

    def names(self) -> set[str]:
        with sqlite3.connect(self.path) as conn:  # another connection: only what committed
            return {row[0] for row in conn.execute("SELECT name FROM items")}


def _insert(name: str):  # type: ignore[no-untyped-def]
    def work(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO items (name) VALUES (?)", (name,))
        return name

    return work


@pytest.fixture
def traced(tmp_path: Path) -> Traced:
    return Traced(tmp_path / "group.db")


def test_a_finished_write_is_already_committed(traced: Traced) -> None:
    async def main() -> None:
        writer = GroupCommitWriter(traced.connect)
        try:
            assert await writer.submit(_insert("a")) == "a"
            assert traced.names() == {"a"}
        finally:
            writer.close()

    asyncio.run(main())


def test_writes_that_queue_together_share_one_commit(traced: Traced) -> None:
    gate = threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        gate.wait(10)

    async def main() -> None:
        writer = GroupCommitWriter(traced.connect)
        try:
            first = asyncio.ensure_future(writer.submit(blocker))
            await asyncio.sleep(0.1)  # the writer is now inside the first transaction
            rest = [asyncio.ensure_future(writer.submit(_insert(f"n{i}"))) for i in range(50)]
            await asyncio.sleep(0.1)
            gate.set()
            await first
            assert sorted(await asyncio.gather(*rest)) == sorted(f"n{i}" for i in range(50))
        finally:
            writer.close()

    asyncio.run(main())
    assert traced.names() == {f"n{i}" for i in range(50)}
    assert traced.statements.count("COMMIT") == 2


def test_a_failing_write_is_undone_alone_and_reports_its_own_error(traced: Traced) -> None:
    gate = threading.Event()

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (name) VALUES ('half-written')")
        raise LookupError("stale version")

    async def main() -> list[object]:
        writer = GroupCommitWriter(traced.connect)
        try:
            first = asyncio.ensure_future(writer.submit(lambda conn: gate.wait(10)))
            await asyncio.sleep(0.1)
            group = [
                writer.submit(_insert("before")),
                writer.submit(failing),
                writer.submit(_insert("after")),
                writer.submit(_insert("before")),  # a duplicate key: fails alone too
            ]
            futures = [asyncio.ensure_future(g) for g in group]
            await asyncio.sleep(0.1)
            gate.set()
            await first
            return await asyncio.gather(*futures, return_exceptions=True)
        finally:
            writer.close()

    before, failed, after, duplicate = asyncio.run(main())
    assert (before, after) == ("before", "after")
    assert isinstance(failed, LookupError) and str(failed) == "stale version"
    assert isinstance(duplicate, sqlite3.IntegrityError)
    assert traced.names() == {"before", "after"}


def test_a_group_whose_commit_fails_fails_every_write_in_it(traced: Traced) -> None:
    """A write that cannot start its transaction (another process holds the lock past the
    busy timeout) is reported failed, and nothing of it is visible."""
    holder = sqlite3.connect(traced.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    def connect() -> sqlite3.Connection:
        conn = traced.connect()
        conn.execute("PRAGMA busy_timeout=100")
        return conn

    async def main() -> object:
        writer = GroupCommitWriter(connect)
        try:
            return await asyncio.gather(writer.submit(_insert("x")), return_exceptions=True)
        finally:
            writer.close()

    (outcome,) = asyncio.run(main())  # type: ignore[misc]
    holder.execute("ROLLBACK")
    holder.close()
    assert isinstance(outcome, sqlite3.OperationalError)
    assert "locked" in str(outcome)
    assert traced.names() == set()


def test_a_connection_that_cannot_be_made_fails_the_write_and_is_tried_again(
    traced: Traced,
) -> None:
    """A writer thread that died on connecting left every later write waiting forever."""
    attempts: list[int] = []

    def connect() -> sqlite3.Connection:
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("database is locked")
        return traced.connect()

    async def main() -> tuple[object, object]:
        writer = GroupCommitWriter(connect)
        try:
            first = await asyncio.gather(writer.submit(_insert("a")), return_exceptions=True)
            second = await asyncio.wait_for(writer.submit(_insert("b")), 10)
            return first[0], second
        finally:
            writer.close()

    first, second = asyncio.run(main())
    assert isinstance(first, sqlite3.OperationalError)
    assert second == "b"
    assert traced.names() == {"b"}


def _group(traced: Traced, *durable: bool) -> list[str]:
    """Commit one group of inserts (durable or not, in that order); the statements run."""
    gate = threading.Event()

    def blocker(conn: sqlite3.Connection) -> None:
        gate.wait(10)

    async def main() -> None:
        writer = GroupCommitWriter(traced.connect)
        try:
            first = asyncio.ensure_future(writer.submit(blocker))
            await asyncio.sleep(0.1)
            del traced.statements[:]
            rest = [
                asyncio.ensure_future(writer.submit(_insert(f"n{i}"), durable=flag))
                for i, flag in enumerate(durable)
            ]
            await asyncio.sleep(0.1)
            gate.set()
            await first
            await asyncio.gather(*rest)
        finally:
            writer.close()

    asyncio.run(main())
    return [s for s in traced.statements[traced.statements.index("COMMIT") + 1 :]]


def test_a_group_of_writes_that_need_no_fsync_commits_without_one(traced: Traced) -> None:
    statements = _group(traced, False, False)
    assert statements[0] == "PRAGMA synchronous=NORMAL"
    assert statements[-2:] == ["COMMIT", "PRAGMA synchronous=FULL"]
    assert traced.names() == {"n0", "n1"}


def test_one_durable_write_makes_its_whole_group_durable(traced: Traced) -> None:
    statements = _group(traced, False, True, False)
    assert not any(s.startswith("PRAGMA synchronous") for s in statements)
    assert traced.names() == {"n0", "n1", "n2"}
