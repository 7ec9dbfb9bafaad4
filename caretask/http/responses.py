"""FHIR JSON responses, the headers every response carries, and `_pretty`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FHIR_JSON = "application/fhir+json; charset=utf-8"

# on every response: uvicorn adds them (cli.serve), http.timeouts writes them with its own
EVERY_RESPONSE: tuple[tuple[str, str], ...] = (("X-Content-Type-Options", "nosniff"),)
# on every FHIR response: Tasks, Bundles and OperationOutcomes about them carry patient data,
# which no cache may keep (a client still revalidates its own copy with If-None-Match)
_NO_STORE = (b"cache-control", b"no-store")


class _FhirResponse(Response):
    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        super().init_headers(headers)
        if headers is None or "Cache-Control" not in headers:
            self.raw_headers.append(_NO_STORE)


def fhir_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return _FhirResponse(orjson.dumps(body), status, headers, FHIR_JSON)


def empty_response(status: int, headers: Mapping[str, str] | None = None) -> Response:
    return _FhirResponse(b"", status, headers)


def wants_pretty(query: bytes) -> bool:
    """`_pretty=true` in a query string (FHIR's request for indented JSON)."""
    if b"_pretty" not in query:
        return False
    return ("_pretty", "true") in parse_qsl(query.decode("latin-1"), keep_blank_values=True)


class PrettyJson:
    """`_pretty=true`: every JSON answer, errors included, indented by two spaces. At the
    edge, in one layer, so that no endpoint needs to know of it; the JSON is written again
    only for the requests that ask (the bodies are a page of Tasks at most)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not wants_pretty(scope.get("query_string", b"")):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def indent(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and _is_json(message):
                start = message  # held until the body is whole: its length changes
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _indented(b"".join(chunks))
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, indent)


def _is_json(start: Message) -> bool:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind in (b"application/fhir+json", b"application/json")
    return False


def _indented(body: bytes) -> bytes:
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
    except orjson.JSONDecodeError:
        return body  # no body (HEAD, 304), or not ours to rewrite
