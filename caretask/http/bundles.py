"""The system endpoint POST /: a batch or transaction Bundle, mapped to the bundles service
(caretask.service.bundles) and its answer to a response. Each entry is recorded in the
audit trail as a request of its own, besides the Bundle's own record."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from caretask.http.auth import person_of
from caretask.http.endpoint import endpoint
from caretask.http.negotiation import prefer, read_json_body
from caretask.http.responses import fhir_response
from caretask.http.state import opened, settings
from caretask.http.urls import base_url, link_path


@endpoint(None)  # each entry needs its own interaction's scope: the service checks
async def process(request: Request) -> Response:
    raw = await read_json_body(request, settings(request).max_bundle_bytes)
    base = base_url(request)
    processed = await opened(request).bundles.process(
        raw,
        request.state.granted,
        base=base,
        link_path=link_path(base),
        prefer_return=prefer(request).get("return"),
        person=person_of(request),
    )
    request.state.audit_interaction = processed.kind
    request.state.audit_entries = processed.records
    if processed.failure is not None:
        raise processed.failure
    assert processed.bundle is not None
    return fhir_response(processed.bundle)
