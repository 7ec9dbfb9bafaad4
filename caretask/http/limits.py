"""Request size limits checked before routing: header bytes, header count and URL length.

uvicorn's httptools parser takes headers of any size and number, so an oversized request
reached the app (and its memory) unchecked. Past the limits the answer is a FHIR
OperationOutcome: 431 for headers, 414 for the URL (a head that grows past them before it
is complete is refused the same way by the HTTP protocol, http.timeouts). Body size is
limited where bodies are read (negotiation.read_body), JSON depth where they are parsed
(task_rules).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from caretask.domain.outcome import outcome
from caretask.http.responses import fhir_response
from caretask.http.urls import AllowedHosts


def url_too_long(limit: int) -> tuple[int, str]:
    return 414, f"the URL exceeds {limit} bytes"


def headers_too_large(limit: int) -> tuple[int, str]:
    return 431, f"the request headers exceed {limit} bytes"


class RequestLimits:
    """The limits, and the Host names allowed (http.urls.AllowedHosts), checked in one
    layer: each layer costs every request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_header_bytes: int,
        max_headers: int,
        max_url_bytes: int,
        hosts: AllowedHosts | None = None,
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_url_bytes = max_url_bytes
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                status, text = problem
                code = "invalid" if status == 400 else "too-long"
                await fhir_response(outcome(code, text), status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> tuple[int, str] | None:
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            return 431, f"at most {self.max_headers} request headers are accepted"
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            return headers_too_large(self.max_header_bytes)
        url = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if url > self.max_url_bytes:
            return url_too_long(self.max_url_bytes)
        if self.hosts is not None and not self.hosts.allow(headers):
            return 400, AllowedHosts.REFUSAL
        return None
