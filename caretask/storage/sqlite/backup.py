"""Online backup and restore of an SQLite database with SQLite's backup API.

A backup copies the whole database in one step, inside one read transaction: in WAL mode
readers do not block writers, so the server keeps writing while the copy holds the
database as it was when the step began (a backup in several steps would start over each
time another connection wrote). It is written beside the destination, checked
(`PRAGMA quick_check`), synced and then renamed into place: a destination either does not
exist or is a whole, checked copy.

A restore copies a backup into the database through the same API (never by copying
files: a stale `-wal` file beside a copied database would be replayed over it).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path


class BackupError(Exception):
    """What went wrong, in one line for the operator."""


@dataclass(frozen=True, slots=True)
class Copied:
    path: str
    bytes: int
    tasks: int
    seconds: float


def backup(source: str, destination: str) -> Copied:
    """Copy the database at `source` to the new file `destination`."""
    target = Path(destination)
    if target.exists():
        raise BackupError(f"{destination} exists: give a new file name")
    if not Path(source).exists():
        raise BackupError(f"{source} does not exist")
    partial = target.with_name(f".{target.name}.partial")
    started = time.monotonic()
    partial.unlink(missing_ok=True)
    try:
        _copy(source, str(partial))
        _check(str(partial))
        _sync(partial)
        os.replace(partial, target)
        _sync(target.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Copied(
        str(target), target.stat().st_size, _tasks(str(target)), time.monotonic() - started
    )


def restore(backup_file: str, database: str) -> Copied:
    """Copy the backup `backup_file` over the database at `database` (which no server may
    be using)."""
    if not Path(backup_file).exists():
        raise BackupError(f"{backup_file} does not exist")
    started = time.monotonic()
    _check(backup_file)
    _copy(backup_file, database)
    _check(database)
    return Copied(
        database, Path(database).stat().st_size, _tasks(database), time.monotonic() - started
    )


def _copy(source: str, destination: str) -> None:
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(destination, timeout=30)
    try:
        src.backup(dst)  # every page in one step: one consistent snapshot
        if dst.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            dst.execute("PRAGMA journal_mode=WAL")  # as the server keeps its databases
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        dst.close()
        src.close()


def _check(path: str) -> None:
    conn = sqlite3.connect(path, timeout=30)
    try:
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise BackupError(f"{path} is not a sound SQLite database: {error}") from None
    finally:
        conn.close()
    if verdict != "ok":
        raise BackupError(f"{path} failed its check: {verdict[:200]}")


def _tasks(path: str) -> int:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])
    except sqlite3.DatabaseError:
        return 0  # not a caretask database (yet): the copy is still whole
    finally:
        conn.close()


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
