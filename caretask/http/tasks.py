"""The Task endpoints: create, read, vread, update (by id or by search), patch, delete,
$validate, history (a task's, and the change feed) and search, each mapping its request to
a call of the tasks service (caretask.service) and the result to a response."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from caretask.auth import scopes
from caretask.domain import audit, bundle
from caretask.domain.dates import http_date
from caretask.domain.errors import InvalidRequest, InvalidSearch, NotFound
from caretask.domain.etag import etag, etag_matches
from caretask.domain.outcome import operation_outcome
from caretask.domain.references import ID_PATTERN
from caretask.http.audit import CLIENT_CLOSED
from caretask.http.auth import person_of, require
from caretask.http.endpoint import endpoint
from caretask.http.errors import HttpProblem
from caretask.http.negotiation import (
    FORM,
    check_format,
    media_type,
    prefer,
    read_body,
    read_json_body,
    read_patch_body,
)
from caretask.http.responses import empty_response, fhir_response
from caretask.http.state import opened, settings
from caretask.http.urls import base_url, link_path
from caretask.service import TaskService
from caretask.service.tasks import query_pairs
from caretask.storage.base import StoredTask

# a search still running this long after it started is watched for its client leaving;
# shorter ones (nearly all) cost a timer instead of a task
WATCH_AFTER = 0.05
_FORMAT = ("_format", "_pretty", "")  # query parameters that say how to answer, not what
T = TypeVar("T")


def _service(request: Request) -> TaskService:
    return opened(request).tasks


def version_headers(task: StoredTask) -> dict[str, str]:
    headers = {"ETag": etag(task.version_id)}
    updated = http_date(task.resource["meta"]["lastUpdated"])
    if updated:
        headers["Last-Modified"] = updated
    return headers


def _body(request: Request) -> Awaitable[bytes]:
    return read_json_body(request, settings(request).max_body_bytes)


def _query(request: Request) -> str:
    raw: bytes = request.scope.get("query_string", b"")
    return raw.decode("latin-1")


def _lenient(request: Request) -> bool:
    return prefer(request).get("handling") == "lenient"


def _task(request: Request, task: StoredTask) -> Response:
    body = _service(request).shown_as_asked(task, base_url(request), _query(request))
    return fhir_response(body, 200, version_headers(task))


def _written(request: Request, task: StoredTask, status: int, shows: bool = True) -> Response:
    """A create's (201) or an update's (200) answer: where the version is, and the version
    itself when the client prefers it (Prefer: return=representation) or the profile
    returns it by default."""
    base = base_url(request)
    location = f"{base}/Task/{task.id}"
    if status != 201:
        location += f"/_history/{task.version_id}"
    request.state.audit_target = (task.id, None if status == 201 else task.version_id)
    headers = {**version_headers(task), "Location": location}
    wanted = prefer(request).get("return")
    service = _service(request)
    if shows and service.write_returns_task(wanted):
        return fhir_response(service.shown(task, base), status, headers)
    return empty_response(status, headers)


@endpoint(scopes.CREATE)
async def create(request: Request) -> Response:
    service = _service(request)
    condition = _create_condition(request)
    if condition is None:
        task = await service.create(await _body(request), person=person_of(request))
        return _written(request, task, 201)
    # a conditional create searches, and its answer may be a task that exists: the search
    # scope to run it, the read scope to see that task
    require(request, scopes.SEARCH)
    request.state.audit_query = audit.redact_query(condition)  # the header's names too
    task, created = await service.create_if_none_exist(
        await _body(request), condition, person=person_of(request)
    )
    return _written(request, task, 201 if created else 200, shows=created or _reads(request))


def _reads(request: Request) -> bool:
    return scopes.READ in request.state.granted


def _search_in_query(request: Request) -> str:
    """The query string less the parameters that say how to answer: a conditional
    interaction's search (service.tasks.Condition refuses an empty one)."""
    return "&".join(
        part for part in _query(request).split("&") if part.split("=", 1)[0] not in _FORMAT
    )


def _create_condition(request: Request) -> str | None:
    """A create's condition: FHIR's If-None-Exist header, or search parameters in the query
    string (how fhirpy's get_or_create and some servers send it); ignoring either would
    make a conditional create unconditional."""
    header = request.headers.get("if-none-exist")
    query = _search_in_query(request)
    if header is not None and query:
        raise InvalidRequest.single(
            "invalid", "a create takes its condition from If-None-Exist or the query, not both"
        )
    return header if header is not None else query or None


@endpoint(scopes.READ)
async def read(request: Request) -> Response:
    task = await _service(request).read(request.path_params["id"])
    request.state.audit_target = (task.id, task.version_id)
    if etag_matches(request.headers.get("if-none-match", ""), task.version_id):
        return empty_response(304, version_headers(task))
    return _task(request, task)


@endpoint(scopes.READ)
async def vread(request: Request) -> Response:
    path = request.path_params
    return _task(request, await _service(request).vread(path["id"], path["vid"]))


@endpoint(scopes.UPDATE)
async def update(request: Request) -> Response:
    task = await _service(request).update(
        request.path_params["id"],
        request.headers.get("if-match"),
        partial(_body, request),
        request.headers.get("if-unmodified-since"),
        person=person_of(request),
    )
    return _written(request, task, 200)


@endpoint(scopes.UPDATE + scopes.SEARCH)
async def update_by_search(request: Request) -> Response:
    """A conditional update, PUT /Task?<search>: 200 for the task it updated, 201 for the
    one it created (which the create scope must allow too)."""
    task, created = await _service(request).update_by_search(
        _query(request),
        request.headers.get("if-match"),
        partial(_body, request),
        request.headers.get("if-unmodified-since"),
        may_create=scopes.CREATE in request.state.granted,
        person=person_of(request),
    )
    return _written(request, task, 201 if created else 200)


@endpoint(scopes.UPDATE)
async def patch(request: Request) -> Response:
    task = await _service(request).patch(
        request.path_params["id"], *_patching(request), person=person_of(request)
    )
    return _written(request, task, 200)


@endpoint(scopes.UPDATE + scopes.SEARCH)
async def patch_by_search(request: Request) -> Response:
    task = await _service(request).patch_by_search(
        _query(request), *_patching(request), person=person_of(request)
    )
    return _written(request, task, 200)


def _patching(request: Request) -> tuple[Any, ...]:
    """What a patch takes from its request besides the task it names: its conditions, how
    to read its body, the body's media type, the base URL."""
    max_bytes = settings(request).max_body_bytes
    return (
        request.headers.get("if-match"),
        request.headers.get("if-unmodified-since"),
        partial(read_patch_body, request, max_bytes),
        media_type(request),
        base_url(request),
    )


# $validate reads nothing stored and writes nothing: the read scope, not a write scope, so
# that a client may check a Task without being allowed to store one
@endpoint(scopes.READ)
async def validate(request: Request) -> Response:
    issues = _service(request).validate(await _body(request))
    return fhir_response(operation_outcome(issues))


@endpoint(scopes.DELETE)
async def delete(request: Request) -> Response:
    """204 with the deleted version's ETag, whether this request deleted the task or an
    earlier one had (idempotent)."""
    task = await _service(request).delete(
        request.path_params["id"], request.headers.get("if-match")
    )
    request.state.audit_target = (task.id, task.version_id)
    return empty_response(204, version_headers(task))


@endpoint(scopes.DELETE + scopes.SEARCH)
async def delete_by_search(request: Request) -> Response:
    """204 whether the search found a task to delete or none (nothing left to delete); with
    the deleted version's ETag when it found one."""
    task = await _service(request).delete_by_search(
        _query(request), request.headers.get("if-match")
    )
    if task is None:
        return empty_response(204)
    request.state.audit_target = (task.id, task.version_id)
    return empty_response(204, version_headers(task))


async def _changes(request: Request, path: str) -> Response:
    base = base_url(request)
    page = await _service(request).changes(
        _query(request), lenient=_lenient(request), base=base, link_path=link_path(base), path=path
    )
    return fhir_response(page.bundle)


@endpoint(scopes.SEARCH)  # SMART v2: type and system history are `s`, a task's is `r`
async def type_history(request: Request) -> Response:
    return await _changes(request, "/Task/_history")


@endpoint(scopes.SEARCH)
async def system_history(request: Request) -> Response:
    return await _changes(request, "/_history")


@endpoint(scopes.READ)
async def history(request: Request) -> Response:
    base = base_url(request)
    page = await _service(request).history(
        request.path_params["id"],
        _query(request),
        lenient=_lenient(request),
        base=base,
        link_path=link_path(base),
    )
    return fhir_response(page.bundle)


async def _search(request: Request, pairs: list[tuple[str, str]]) -> Response:
    request.state.audit_query = audit.redact_pairs(pairs)  # the form's names too
    base = base_url(request)
    search = _service(request).search(
        pairs, lenient=_lenient(request), base=base, link_path=link_path(base)
    )
    page = await _unless_client_leaves(request, search)
    return fhir_response(page.bundle)


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled if the client disconnects while it runs: the engines then stop the
    statement (SQLite's progress handler, PostgreSQL's cancel), so no database time goes to
    an answer nobody will read."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    watcher: asyncio.Task[None] | None = None

    def watch() -> None:
        nonlocal watcher
        watcher = loop.create_task(_cancel_on_disconnect(request.receive, task))

    timer = loop.call_later(WATCH_AFTER, watch)
    try:
        return await work
    except asyncio.CancelledError:
        if watcher is not None and watcher.done() and not watcher.cancelled():
            task.uncancel()  # our own cancel, not the server's: answer (to nobody)
            raise HttpProblem(
                CLIENT_CLOSED, "incomplete", "the client closed the connection during the search"
            ) from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any]) -> None:
    # the body, if any, has been read: what comes next is the disconnect
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()


@endpoint(scopes.SEARCH)
async def search_get(request: Request) -> Response:
    return await _search(request, query_pairs(_query(request)))


@endpoint(scopes.SEARCH)
async def search_post(request: Request) -> Response:
    if media_type(request) != FORM:
        raise HttpProblem(415, "not-supported", f"POST /Task/_search takes a {FORM} body")
    raw = await read_body(request, settings(request).max_body_bytes)
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidSearch.single("invalid", "the form body could not be parsed") from None
    check_format(form)  # the query's was checked with Accept
    return await _search(request, [*query_pairs(_query(request)), *form])


async def permalink(request: Request) -> Response:
    """A task's permalink opens the task: a redirect to its read URL (which needs a token)."""
    task_id = bundle.permalink_task_id(request.path_params["token"])
    if task_id is None or not ID_PATTERN.fullmatch(task_id):
        raise NotFound.single("not-found", "unknown permalink")
    request.state.audit_target = (task_id, None)
    return empty_response(302, {"Location": f"{base_url(request)}/Task/{task_id}"})
