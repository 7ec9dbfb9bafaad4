"""The embedded engine and the parts only SQLite needs (group commit, checkpoints)."""

from caretask.storage.sqlite.engine import SQLiteStorage

__all__ = ["SQLiteStorage"]
