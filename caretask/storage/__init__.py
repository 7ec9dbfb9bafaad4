"""Storage: one interface (base.Storage), an SQLite and a PostgreSQL engine."""

from __future__ import annotations

from caretask.storage.base import Storage
from caretask.storage.schema import current_revision, head_revision
from caretask.storage.urls import DatabaseURL


class SchemaNotCurrent(Exception):
    pass


def open_storage(
    url: DatabaseURL, search_timeout: float | None = None, pool_size: int | None = None
) -> Storage:
    """An engine for a migrated database (call schema.migrate first). `search_timeout`:
    seconds a search may run before it raises base.SearchTimedOut (None: no limit);
    `pool_size`: PostgreSQL's connections (None: its default)."""
    revision = current_revision(url)
    if revision != head_revision():
        raise SchemaNotCurrent(
            f"the database is at schema revision {revision}, expected {head_revision()}; "
            "run `caretask migrate`"
        )
    if url.is_sqlite:
        from caretask.storage.sqlite import SQLiteStorage

        return SQLiteStorage(url.sqlite_path, search_timeout=search_timeout)
    from caretask.storage.postgresql import PostgreSQLStorage

    return PostgreSQLStorage(url.libpq_url(), pool_size=pool_size, search_timeout=search_timeout)
