"""Database URLs as operators write them (`sqlite:///./caretask.db`, `postgresql://...`)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from caretask.config import DEFAULT_URL


class BadDatabaseURL(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseURL:
    raw: str

    @property
    def scheme(self) -> str:
        return urlsplit(self.raw).scheme.split("+")[0]

    @property
    def is_sqlite(self) -> bool:
        return self.scheme == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.scheme in ("postgresql", "postgres")

    @property
    def sqlite_path(self) -> str:
        path = self.raw.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path  # sqlite:///x -> x, ////abs -> /abs
        if not path or path == ":memory:":
            raise BadDatabaseURL("an in-memory SQLite database cannot be shared; give a file")
        return path

    def sqlalchemy_url(self) -> str:
        if self.is_sqlite:
            return f"sqlite:///{self.sqlite_path}"
        rest = self.raw.split("://", 1)[1]
        return f"postgresql+psycopg://{rest}"

    def libpq_url(self) -> str:
        rest = self.raw.split("://", 1)[1]
        return f"postgresql://{rest}"

    def prepare(self) -> None:
        """Create what an embedded database needs on disk (its folder)."""
        if self.is_sqlite:
            folder = os.path.dirname(os.path.abspath(self.sqlite_path))
            try:
                os.makedirs(folder, exist_ok=True)
            except FileExistsError:  # a file where a folder should be
                not_folder = os.strerror(errno.ENOTDIR)
                raise NotADirectoryError(errno.ENOTDIR, not_folder, folder) from None

    @classmethod
    def parse(cls, raw: str | None) -> DatabaseURL:
        url = cls(raw or DEFAULT_URL)
        # the URL itself is never echoed: it may hold a password
        try:
            url.raw.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes from argv or the environment
            raise BadDatabaseURL("the database URL is not valid UTF-8") from None
        if "://" not in url.raw:
            raise BadDatabaseURL("the database URL must start with sqlite:/// or postgresql://")
        try:
            urlsplit(url.raw).port  # noqa: B018  (validates the host and port)
        except ValueError as error:
            raise BadDatabaseURL(f"malformed database URL: {error}") from None
        if not (url.is_sqlite or url.is_postgresql):
            raise BadDatabaseURL(
                f"unsupported database URL scheme '{url.scheme}': use sqlite:/// or postgresql://"
            )
        if url.is_sqlite:
            url.sqlite_path  # noqa: B018  (validates)
        return url
