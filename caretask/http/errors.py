"""Every failure as an OperationOutcome with the right status; never a stack trace."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from caretask.domain.errors import DomainError, SearchTimeout, status
from caretask.domain.outcome import operation_outcome, outcome
from caretask.http.responses import fhir_response
from caretask.storage.base import StorageUnavailable

log = logging.getLogger("caretask.http")


class HttpProblem(Exception):
    """An error that belongs to HTTP itself (auth, media types, sizes)."""

    def __init__(
        self,
        status: int,
        code: str,
        text: str,
        headers: dict[str, str] | None = None,
        diagnostics: str | None = None,
    ) -> None:
        super().__init__(text)
        self.status, self.code, self.text, self.headers = status, code, text, headers
        self.diagnostics = diagnostics

    @classmethod
    def unauthenticated(cls, detail: str, headers: dict[str, str]) -> HttpProblem:
        """Canvas's 401, with what was wrong as diagnostics."""
        return cls(401, "unknown", "Authentication failed", headers, detail)

    @classmethod
    def forbidden(cls, detail: str) -> HttpProblem:
        """Canvas's 403, with what was missing as diagnostics."""
        return cls(403, "forbidden", "Authorization failed", None, detail)


_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-long", 415: "not-supported"}


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, SearchTimeout) else None
    return fhir_response(operation_outcome(exc.issues), status(exc), headers)


async def http_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpProblem)
    body = outcome(exc.code, exc.text, diagnostics=exc.diagnostics)
    return fhir_response(body, exc.status, exc.headers)


async def storage_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageUnavailable)
    log.warning("database unavailable on %s: %s", request.method, exc.text)
    headers = {"Retry-After": str(exc.retry_after)}
    return fhir_response(outcome("transient", exc.text), 503, headers)


async def starlette_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        text = f"no route for {request.method} {request.url.path[:200]}"
    elif status == 405:
        text = f"method {request.method} is not allowed here"
    else:
        text = str(exc.detail)
    return fhir_response(outcome(_HTTP_CODES.get(status, "processing"), text), status, exc.headers)


def internal_error() -> Response:
    """The answer to an exception nothing handled (app.AccessLog logs it)."""
    return fhir_response(outcome("exception", "internal server error"), 500)
