"""Log records as text or as JSON lines (CARETASK_LOG_FORMAT), and the request id every
request carries.

A JSON line holds the time, level, logger and message, and for a request's access line
its id, method, path (ids and keywords only: http.app.loggable_path), interaction, status,
duration and the client (and person) its token named. Never a query value, a body, a
header value other than the request id, nor a token: those carry PHI and secrets.
"""

from __future__ import annotations

import logging
import re
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


def request_id(given: bytes | None) -> str:
    """The client's X-Request-Id when it is an acceptable one, else a new random one."""
    if given:
        text = given.decode("latin-1")
        if _REQUEST_ID.fullmatch(text):
            return text
    return uuid.uuid4().hex


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
