"""Databases of either engine that one test session or one test has to itself."""

from __future__ import annotations

import base64
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.support.server import Server

ENGINES = ["sqlite", "postgresql"]
POSTGRES_URL = os.environ.get("CARETASK_TEST_POSTGRES_URL")


def database_url(engine: str, workdir: Path) -> str:
    if engine == "sqlite":
        return f"sqlite:///{workdir / 'caretask.db'}"
    raise ValueError(engine)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test session, dropped afterwards."""
    import psycopg
    from psycopg import sql

    assert POSTGRES_URL
    name = f"caretask_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(POSTGRES_URL)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def engine_database(engine: str, workdir: Path) -> Iterator[str]:
    """A database of `engine` that nothing else uses: a fresh PostgreSQL database
    (dropped afterwards), or an SQLite file in `workdir`."""
    if engine == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        yield database_url(engine, workdir)


def fetch_all(database: str, query: str) -> list[tuple[Any, ...]]:
    """The rows of `query` (no parameters), read straight from a database of either engine."""
    if database.startswith("postgresql"):
        import psycopg

        with psycopg.connect(database) as conn:
            return conn.execute(query).fetchall()
    with sqlite3.connect(database.removeprefix("sqlite:///")) as conn:
        return conn.execute(query).fetchall()


def signing_key(server: Server) -> bytes:
    """The server's token signing key, read from its database (to forge test tokens)."""
    rows = fetch_all(server.database, "SELECT secret FROM signing_keys WHERE name = 'access-token'")
    assert rows
    return base64.b64decode(rows[0][0])
