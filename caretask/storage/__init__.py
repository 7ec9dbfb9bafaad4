"""Storage: one interface (base.Storage), an SQLite and a PostgreSQL engine."""

from __future__ import annotations

from caretask.storage.base import SchemaNotCurrent, Storage
from caretask.storage.schema import current_revision, require_current
from caretask.storage.urls import DatabaseURL

__all__ = ["SchemaNotCurrent", "Storage", "open_storage"]


def open_storage(
    url: DatabaseURL, search_timeout: float | None = None, pool_size: int | None = None
) -> Storage:
    """An engine for a migrated database (call schema.migrate first). `search_timeout`:
    seconds a search may run before it raises base.SearchTimedOut (None: no limit);
    `pool_size`: PostgreSQL's connections (None: its default)."""
    require_current(current_revision(url))
    if url.is_sqlite:
        from caretask.storage.sqlite import SQLiteStorage

        return SQLiteStorage(url.sqlite_path, search_timeout=search_timeout)
    from caretask.storage.postgresql import PostgreSQLStorage

    return PostgreSQLStorage(url.libpq_url(), pool_size=pool_size, search_timeout=search_timeout)
