"""Counts and page anchors of recent searches, valid while the tasks table is unchanged.

Two costs grow with the table: `total` (a COUNT over every match) and a deep `_offset`
(the database steps over every skipped row). Both are remembered per query shape and
reused until the data changes. "Changed" is the pair (max last_updated, max pk), which
every create, update and import moves and which both engines read from an index in
microseconds, so servers sharing a database never serve a stale figure.

Anchors: for the default order (by pk), the pk at every ANCHOR_EVERY-th position of the
matches. A page at offset 500,000 then seeks to the anchor at or before it (`pk > ?`)
and skips fewer than ANCHOR_EVERY rows: the seed's `_offset` links stay as they are and
cost about what the first page costs.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

ANCHOR_EVERY = 1_000
ENTRIES = 256

DataVersion = tuple[Any, Any]
Key = tuple[str, tuple[Any, ...]]

# two subqueries, not MAX(a), MAX(b) in one: SQLite answers a lone MAX from the index
# in microseconds but scans the whole table for two
VERSION_SQL = "SELECT (SELECT MAX(last_updated) FROM tasks), (SELECT MAX(pk) FROM tasks)"


@dataclass(slots=True)
class _Entry:
    version: DataVersion
    count: int | None = None
    positions: list[int] = field(default_factory=list)  # 1-based positions of anchors
    pks: list[int] = field(default_factory=list)


class SearchCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, key: Key, version: DataVersion) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.version != version:
                entry = _Entry(version)
                self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > ENTRIES:
                self._entries.popitem(last=False)
            return entry

    def count(self, key: Key, version: DataVersion) -> int | None:
        return self._entry(key, version).count

    def remember_count(self, key: Key, version: DataVersion, count: int) -> None:
        self._entry(key, version).count = count

    def has_anchors(self, key: Key, version: DataVersion) -> bool:
        return bool(self._entry(key, version).positions)

    def remember_anchors(self, key: Key, version: DataVersion, rows: list[tuple[int, int]]) -> None:
        """(position, pk) rows; an empty result is stored as position 0 so it counts."""
        entry = self._entry(key, version)
        entry.positions = [0] + [position for position, _ in rows]
        entry.pks = [0] + [pk for _, pk in rows]

    def anchor(self, key: Key, version: DataVersion, offset: int) -> tuple[int, int]:
        """(position, pk) of the last anchor at or before `offset` rows; (0, 0) if none."""
        entry = self._entry(key, version)
        i = bisect.bisect_right(entry.positions, offset) - 1
        if i <= 0:
            return 0, 0
        return entry.positions[i], entry.pks[i]
