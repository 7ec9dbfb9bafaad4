"""WAL checkpoints off the commit path (storage.sqlite.checkpoint)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from caretask.storage.sqlite.checkpoint import Checkpointer


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA journal_size_limit=0")
    return conn


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@contextmanager
def _database(
    path: Path, pages: int, quiet: float = 60.0
) -> Iterator[tuple[sqlite3.Connection, Checkpointer]]:
    """A table in a WAL database, a writer connection, and a Checkpointer at `pages`."""
    writer = _connect(path)
    writer.execute("CREATE TABLE items (body TEXT)")
    checkpointer = Checkpointer(str(path), lambda: _connect(path), pages=pages, quiet=quiet)
    try:
        yield writer, checkpointer
    finally:
        checkpointer.close()
        writer.close()


def test_a_wal_past_the_threshold_is_copied_back_and_restarted(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    with _database(path, pages=50) as (writer, checkpointer):
        for _ in range(20):  # 20 commits of 8 pages each: past 50 pages of WAL
            writer.execute("BEGIN IMMEDIATE")
            writer.executemany("INSERT INTO items VALUES (?)", [("x" * 4000,)] * 8)
            writer.execute("COMMIT")
            checkpointer.after_commit()
        _wait_for(lambda: checkpointer.checkpoints >= 1)
        rows = 160
        for _ in range(3):  # a checkpoint already running at the last commit may miss it
            done = checkpointer.checkpoints
            checkpointer.after_commit()  # the WAL is still past the threshold: one more
            _wait_for(lambda done=done: checkpointer.checkpoints > done)
            writer.execute("INSERT INTO items VALUES ('last')")  # after a whole checkpoint
            rows += 1  # a writer restarts the WAL from its beginning
            if os.path.getsize(f"{path}-wal") < 50 * 4096:
                break
        assert os.path.getsize(f"{path}-wal") < 50 * 4096
        assert os.path.getsize(path) > 100 * 4000  # the rows are in the database file
        assert writer.execute("SELECT COUNT(*) FROM items").fetchone() == (rows,)
        assert writer.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_small_wal_is_left_alone(tmp_path: Path) -> None:
    with _database(tmp_path / "small.db", pages=1_000) as (writer, checkpointer):
        writer.execute("INSERT INTO items VALUES ('one')")
        checkpointer.after_commit()
        time.sleep(0.2)
        assert checkpointer.checkpoints == 0


def test_a_wal_is_copied_back_and_truncated_once_commits_pause(tmp_path: Path) -> None:
    path = tmp_path / "quiet.db"
    with _database(path, pages=10_000, quiet=0.2) as (writer, checkpointer):
        writer.executemany("INSERT INTO items VALUES (?)", [("x" * 4000,)] * 20)
        checkpointer.after_commit()
        assert os.path.getsize(f"{path}-wal") > 20 * 4000
        _wait_for(lambda: checkpointer.truncations == 1)
        assert os.path.getsize(f"{path}-wal") == 0
        assert writer.execute("SELECT COUNT(*) FROM items").fetchone() == (20,)


def test_a_failed_write_starts_a_checkpoint_at_once(tmp_path: Path) -> None:
    path = tmp_path / "failed.db"
    with _database(path, pages=10_000) as (writer, checkpointer):
        writer.execute("INSERT INTO items VALUES ('one')")
        checkpointer.after_failure()
        _wait_for(lambda: checkpointer.checkpoints == 1)
