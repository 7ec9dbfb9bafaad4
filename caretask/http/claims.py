"""The claim operations on Tasks: POST /Task/<id>/$claim, /Task/$claim-next and
/Task/<id>/$release, each answered with the Task as it now is (ETag, Location of the
version)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from caretask.auth import scopes
from caretask.domain import claims
from caretask.domain.errors import InvalidRequest
from caretask.http.auth import person_of
from caretask.http.endpoint import endpoint
from caretask.http.negotiation import read_optional_json_body
from caretask.http.responses import fhir_response
from caretask.http.state import opened, settings
from caretask.http.tasks import version_headers
from caretask.http.urls import base_url
from caretask.service.tasks import query_pairs, read_json
from caretask.storage.base import StoredTask


async def _arguments(request: Request, operation: str) -> claims.Arguments:
    """The operation's Parameters body (none: no parameters). Its parameters go there, not
    in the query string: an operation that changes a task is not called with GET's form."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    extra = [n for n, _ in query_pairs(query) if n not in ("_format", "_pretty")]
    if extra:
        raise InvalidRequest.single(
            "not-supported",
            f"${operation} takes its parameters in a Parameters body, not the query "
            f"('{extra[0][:40]}')",
        )
    raw = await read_optional_json_body(request, settings(request).max_body_bytes)
    limits = opened(request).tasks.limits
    body = read_json(raw, limits, "Parameters") if raw.strip() else None
    return claims.read_arguments(operation, body, limits.max_depth)


def _answer(request: Request, task: StoredTask) -> Response:
    base = base_url(request)
    request.state.audit_target = (task.id, task.version_id)
    headers = {
        **version_headers(task),
        "Location": f"{base}/Task/{task.id}/_history/{task.version_id}",
    }
    return fhir_response(opened(request).tasks.shown(task, base), 200, headers)


def _person(request: Request) -> str | None:
    """The fhirUser of the person the request acts for (None: a client for itself)."""
    person = person_of(request)
    return person.fhir_user if person is not None else None


@endpoint(scopes.UPDATE)
async def claim(request: Request) -> Response:
    arguments = await _arguments(request, claims.CLAIM)
    owner = claims.claimant(arguments, _person(request))
    task = await opened(request).tasks.claim(request.path_params["id"], owner, base_url(request))
    return _answer(request, task)


@endpoint(scopes.SEARCH + scopes.UPDATE)
async def claim_next(request: Request) -> Response:
    arguments = await _arguments(request, claims.CLAIM_NEXT)
    owner = claims.claimant(arguments, _person(request))
    task = await opened(request).tasks.claim_next(arguments.criteria, owner, base_url(request))
    return _answer(request, task)


@endpoint(scopes.UPDATE)
async def release(request: Request) -> Response:
    await _arguments(request, claims.RELEASE)
    task = await opened(request).tasks.release(
        request.path_params["id"], _person(request), base_url(request)
    )
    return _answer(request, task)
