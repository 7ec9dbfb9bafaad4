"""CORS (the Fetch standard's cross-origin requests), for browser apps on the origins of
CARETASK_CORS_ORIGINS; off when none are set.

Starlette's CORSMiddleware does the work: it answers preflights, and adds the headers to
every other response that passes through it, the refusals of the limits and of the routes
included, so that a browser app can read why it was refused. Only its refusal of a
preflight is changed: a plain-text 400 there would be the one 4xx that is not an
OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from caretask.domain.outcome import outcome
from caretask.http.responses import fhir_response

# what a browser app may read of a response beyond the CORS-safelisted headers: where a
# created Task is, its version, when it changed, and how long to wait after a 503 or 429
EXPOSED = ("Location", "ETag", "Last-Modified", "Retry-After", "WWW-Authenticate")
# how long a browser may reuse a preflight's answer, s (browsers cap it: Chromium at 7200)
MAX_AGE = 600


class Cors(CORSMiddleware):
    def __init__(self, app: ASGIApp, *, origins: Sequence[str], methods: Sequence[str]) -> None:
        # any request header: the API takes no cookies (credentials stay off), so a header a
        # browser app adds cannot carry anything the app could not send in another way
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=methods,
            allow_headers=("*",),
            expose_headers=EXPOSED,
            max_age=MAX_AGE,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        text = f"CORS preflight refused; not allowed: {refused}"
        return fhir_response(outcome("forbidden", text), response.status_code, headers)
