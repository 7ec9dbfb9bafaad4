"""WAL checkpoints for SQLite, away from the commits that clients wait for.

SQLite's own auto-checkpoint runs inside the COMMIT that crosses its threshold, so one
group of writers in a few hundred waited for megabytes to be copied back into the
database file, and the slowest updates waited that long (benchmarks.http). Here the
writer turns auto-checkpoint off, and this thread runs checkpoints on its own connection:

- after a commit that leaves the WAL past `pages` (1,000 pages, 4 MB): PASSIVE, so
  readers and writers go on meanwhile, and a page rewritten many times between
  checkpoints is copied back once. Kept small because every read looks up each page it
  needs in the WAL's index first and reads the pages it finds there from the WAL file,
  not the memory-mapped database: with 40 MB of WAL, reads and searches mixed with writes
  ran at half their rate alone (benchmarks.http, the mix);
- after a write that failed as a group (a full disk, an I/O error): a WAL can only start
  over from its beginning, reusing its space instead of growing, once a checkpoint has
  copied it back, so waiting for 40 MB would leave a full disk full;
- once no commit came for `quiet` seconds: PASSIVE, then TRUNCATE without waiting for
  anyone (it gives up at once if a reader or writer is busy), which gives the WAL's space
  back to the file system.

Failed checkpoints are retried no faster than every `quiet` seconds.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable

PAGE_BYTES = 4096
log = logging.getLogger("caretask.storage")


class Checkpointer:
    def __init__(
        self,
        path: str,
        connect: Callable[[], sqlite3.Connection],
        pages: int = 1_000,
        quiet: float = 2.0,
    ) -> None:
        self._wal = f"{path}-wal"
        self._connect = connect
        self._threshold = pages * PAGE_BYTES
        self._quiet = quiet
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_write = time.monotonic()
        self._pending = False  # written (or failed to) since the WAL was last truncated
        self.checkpoints = 0
        self.truncations = 0
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def after_commit(self) -> None:
        """Called by the writer after each COMMIT: cheap (one stat of the WAL file)."""
        self._last_write = time.monotonic()
        self._pending = True
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return
        if size >= self._threshold:
            self._wake.set()

    def after_failure(self) -> None:
        """Called by the writer after a group failed as a whole."""
        self._pending = True
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        while True:
            woken = self._wake.wait(self._quiet)
            self._wake.clear()
            if self._stop.is_set():
                return
            last_write = self._last_write
            idle = self._pending and time.monotonic() - last_write >= self._quiet
            if not (woken or idle):
                continue
            try:
                conn = conn or self._connect()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
                if idle and _truncate(conn) and self._last_write == last_write:
                    self._pending = False
                    self.truncations += 1
            except sqlite3.Error as error:
                if not failing:  # once per spell of failures, not once a second
                    log.warning("WAL checkpoint failed: %s", error)
                failing = True
                self._stop.wait(self._quiet)
                continue
            if failing:
                log.warning("WAL checkpoints succeed again")
                failing = False


def _truncate(conn: sqlite3.Connection) -> bool:
    """A TRUNCATE checkpoint that does not wait: whether it emptied the WAL."""
    (timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute("PRAGMA busy_timeout=0")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError:  # locked: another connection is busy
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(timeout)}")
    return bool(busy == 0)
