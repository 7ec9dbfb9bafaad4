"""FHIR JSON responses, and the headers every response carries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

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
