"""WAL checkpoints for SQLite, away from the commits that clients wait for.

SQLite's own auto-checkpoint runs inside the COMMIT that crosses its threshold, so one
group of writers in a few hundred waited for megabytes to be copied back into the
database file: the p99 of updates went over 50 ms (benchmarks.http, issue 5). Here the
writer turns auto-checkpoint off and, after a commit, looks at the WAL's size; past
`pages` it wakes this thread, which runs a PASSIVE checkpoint on its own connection:
readers and writers go on meanwhile, and the WAL restarts from its beginning once a
checkpoint has caught up. A larger threshold (10,000 pages, 40 MB) also means a page
rewritten many times between checkpoints is copied back once.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable

PAGE_BYTES = 4096
log = logging.getLogger("caretask.storage")


class Checkpointer:
    def __init__(
        self, path: str, connect: Callable[[], sqlite3.Connection], pages: int = 10_000
    ) -> None:
        self._wal = f"{path}-wal"
        self._connect = connect
        self._threshold = pages * PAGE_BYTES
        self._wake = threading.Event()
        self._stopping = False
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def after_commit(self) -> None:
        """Called by the writer after each COMMIT: cheap (one stat of the WAL file)."""
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return
        if size >= self._threshold:
            self._wake.set()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                conn = conn or self._connect()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as error:  # the next commit past the threshold tries again
                log.warning("WAL checkpoint failed: %s", error)
                continue
            self.checkpoints += 1
