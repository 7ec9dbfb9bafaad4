"""Creating and migrating the schema (Alembic), and refusing a database newer than us."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from caretask.storage.base import SchemaNotCurrent, SchemaTooNew
from caretask.storage.bulk import reindex_if_stale
from caretask.storage.dialect import for_url
from caretask.storage.urls import DatabaseURL

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _engine(url: DatabaseURL) -> sa.Engine:
    if not url.is_sqlite:
        return sa.create_engine(url.sqlalchemy_url(), poolclass=sa.pool.NullPool)
    engine = sa.create_engine(
        url.sqlalchemy_url(), poolclass=sa.pool.NullPool, connect_args={"timeout": 30}
    )

    # Python's sqlite3 commits DDL as it goes, so a migration failing half way would
    # leave half a schema; SQLAlchemy's documented remedy: begin the transaction ourselves.
    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def require_current(revision: str | None) -> None:
    """SchemaNotCurrent unless `revision` (the database's) is this caretask's."""
    if revision != head_revision():
        raise SchemaNotCurrent(
            f"the database is at schema revision {revision}, expected {head_revision()}; "
            "run `caretask migrate`"
        )


def current_revision(url: DatabaseURL) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


@contextmanager
def _file_lock(url: DatabaseURL) -> Iterator[None]:
    """Serialise migrators of one SQLite file (PostgreSQL uses an advisory lock)."""
    if not url.is_sqlite:
        yield
        return
    with open(url.sqlite_path + ".migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(url: DatabaseURL, revision: str = "head") -> None:
    """Bring the database to `revision`; safe to run from several servers at once."""
    url.prepare()
    script = ScriptDirectory.from_config(_config())
    engine = _engine(url)
    try:
        with _file_lock(url), engine.begin() as connection:
            lock = for_url(url).migration_lock
            if lock:
                connection.exec_driver_sql(lock)
            current = MigrationContext.configure(connection).get_current_revision()
            if current is not None:
                try:
                    script.get_revision(current)
                except Exception:
                    raise SchemaTooNew(
                        f"the database is at schema revision {current}, which this caretask "
                        f"does not know (newest known: {head_revision()}); upgrade caretask"
                    ) from None
            config = _config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            if revision == "head":
                reindex_if_stale(connection)
    finally:
        engine.dispose()


def check_writable(url: DatabaseURL) -> None:
    """Raise the database's own error unless it takes a write (a read-only file, folder or
    PostgreSQL server), so that `serve` finds out before it starts any worker. The write
    changes nothing and is rolled back."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
            transaction.rollback()
    finally:
        engine.dispose()
