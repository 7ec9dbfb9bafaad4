"""The one column table (storage.columns) covers every scalar the index extraction yields."""

from __future__ import annotations

import dataclasses

from caretask.domain.indexing import TaskIndex
from caretask.storage.columns import INDEX_COLUMNS

ROWS = {"strings", "tokens", "refs"}  # multi-valued: the side tables


def test_every_scalar_the_index_extracts_has_a_column() -> None:
    scalars = {f.name for f in dataclasses.fields(TaskIndex)} - ROWS
    assert set(INDEX_COLUMNS) == scalars
