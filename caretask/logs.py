"""Log records as text or as JSON lines (CARETASK_LOG_FORMAT), and the request id every
request carries.

A JSON line holds the time, level, logger and message, and for a request's access line
its id, method, path (ids and keywords only: http.app.loggable_path), interaction, status,
duration and the client (and person) its token named. Never a query value, a body, a
header value other than the request id, nor a token: those carry PHI and secrets.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

FORMATS = ("text", "json")
REQUEST_ID_HEADER = "x-request-id"
# what a client's X-Request-Id may be to be kept (else a new one is made): short, and only
# characters that cannot forge a log line or smuggle a value into a JSON field
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")
# the access line's fields (the `extra` of its record)
FIELDS = (
    "request_id",
    "method",
    "path",
    "params",
    "interaction",
    "status",
    "duration_ms",
    "client_id",
    "user",
)


# a new request id: this process's random prefix and a count, unique across processes and
# restarts without a call for randomness per request
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNT = itertools.count(1)


def request_id(given: bytes | None) -> str:
    """The client's X-Request-Id when it is an acceptable one, else a new one."""
    if given:
        text = given.decode("latin-1")
        if _REQUEST_ID.fullmatch(text):
            return text
    return f"{_ID_PREFIX}{next(_ID_COUNT):016x}"  # 32 hex digits, as a UUID's


class TextFormatter(logging.Formatter):
    """uvicorn's text lines ("INFO:     message"), without its colours and at a fraction of
    its cost (it copies every record): the access log's, a line per request."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        level = record.levelname
        return f"{level}:{' ' * (8 - len(level))} {record.message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def formatter_config(log_format: str) -> dict[str, Any] | None:
    """The logging.config formatter entry of a format (None: the text default's own)."""
    return {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else None


def access_formatter_config(log_format: str) -> dict[str, Any]:
    """The logging.config formatter entry of the access log in a format."""
    return formatter_config(log_format) or {"()": f"{__name__}.TextFormatter"}


class LoopBatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler for the access log that writes, on the event loop's thread, all
    the lines of one turn of the loop in one write, at the end of that turn: a line per
    request each with its own write (and flush) was a tenth of a read's CPU, and every
    write released the GIL to the storage threads in the middle of a request. A record
    from any other thread is written at once, as StreamHandler does."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if not self._pending:
            loop.call_soon(self._write)
        self._pending.append(line)

    def _write(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        self.acquire()
        try:
            self.stream.write(self.terminator.join(lines) + self.terminator)
            self.stream.flush()
        except Exception:  # as logging.Handler.handleError: a log line must not fail a request
            if logging.raiseExceptions:
                traceback.print_exc()
        finally:
            self.release()

    def flush(self) -> None:
        """At shutdown too: lines of a turn the loop never finished are written here."""
        self._write()
        super().flush()
