"""The Task endpoints: create, read, vread, update, history and search."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from email.utils import formatdate
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from caretask.auth import scopes
from caretask.domain import audit, bundle, indexing, search_params, task_rules
from caretask.domain.dates import now_instant, parse_range
from caretask.domain.errors import InvalidRequest, InvalidSearch, Issue, NotFound, VersionConflict
from caretask.domain.references import ID_PATTERN, version_number
from caretask.http.audit import CLIENT_CLOSED
from caretask.http.auth import authorize
from caretask.http.errors import HttpProblem
from caretask.http.negotiation import FORM, check_accept, media_type, prefer, read_body, read_task
from caretask.http.responses import empty_response, fhir_response
from caretask.http.state import opened, settings
from caretask.http.urls import base_url, link_path
from caretask.storage.base import (
    NewVersion,
    SearchTimedOut,
    StaleVersion,
    Storage,
    StoredTask,
    TaskNotFound,
)

# a search still running this long after it started is watched for its client leaving;
# shorter ones (nearly all) cost a timer instead of a task
WATCH_AFTER = 0.05
T = TypeVar("T")


def _storage(request: Request) -> Storage:
    return opened(request).storage


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _version_headers(task: StoredTask) -> dict[str, str]:
    headers = {"ETag": _etag(task.version_id)}
    updated = parse_range(task.resource["meta"]["lastUpdated"])
    if updated:
        headers["Last-Modified"] = formatdate(updated[0] / 1e6, usegmt=True)
    return headers


def _parse_etag(value: str, header: str) -> int:
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    version = version_number(text.strip('"'))
    if version is None:
        raise InvalidRequest.single("invalid", f'{header} must look like W/"<version>"')
    return version


def _task_id(request: Request) -> str:
    task_id: str = request.path_params["id"]
    if not ID_PATTERN.fullmatch(task_id):
        raise NotFound.single("not-found", "no Task has this id")
    return task_id


async def _valid_body(request: Request) -> dict[str, Any]:
    limits = settings(request)
    return await read_task(request, limits.max_body_bytes, limits.max_json_depth)


def _written(request: Request, task: StoredTask, status: int) -> Response:
    base = base_url(request)
    location = f"{base}/Task/{task.id}"
    if status != 201:
        location += f"/_history/{task.version_id}"
    request.state.audit_target = (task.id, None if status == 201 else task.version_id)
    headers = {**_version_headers(task), "Location": location}
    if prefer(request).get("return") == "representation":
        return fhir_response(bundle.render_task(task.resource, base), status, headers)
    return empty_response(status, headers)


async def create(request: Request) -> Response:
    await authorize(request, scopes.CREATE)
    check_accept(request)
    body = await _valid_body(request)
    now, now_us = now_instant()
    task_id = task_rules.new_id()
    resource = task_rules.stamp(body, task_id=task_id, version_id=1, now=now)
    task = await _storage(request).create_task(
        task_id, resource, indexing.extract(resource), now_us
    )
    return _written(request, task, 201)


async def read(request: Request) -> Response:
    await authorize(request, scopes.READ)
    check_accept(request)
    task = await _storage(request).read_task(_task_id(request))
    if task is None:
        raise NotFound.single("not-found", "no Task has this id")
    request.state.audit_target = (task.id, task.version_id)
    headers = _version_headers(task)
    if request.headers.get("if-none-match", "").strip() in (headers["ETag"], headers["ETag"][2:]):
        return empty_response(304, headers)
    return fhir_response(bundle.render_task(task.resource, base_url(request)), 200, headers)


async def vread(request: Request) -> Response:
    await authorize(request, scopes.READ)
    check_accept(request)
    version = version_number(request.path_params["vid"])
    task_id = _task_id(request)
    task = None
    if version is not None:
        task = await _storage(request).read_version(task_id, version)
    if task is None:
        raise NotFound.single("not-found", "no such version of this Task")
    return fhir_response(
        bundle.render_task(task.resource, base_url(request)), 200, _version_headers(task)
    )


async def update(request: Request) -> Response:
    await authorize(request, scopes.UPDATE)
    check_accept(request)
    task_id = _task_id(request)
    if_match = request.headers.get("if-match")
    wanted = _parse_etag(if_match, "If-Match") if if_match is not None else None
    body = await _valid_body(request)
    if "id" in body and body["id"] != task_id:
        raise InvalidRequest(
            [Issue("invalid", "the id in the body must match the id in the URL", "Task.id")]
        )

    def build(current: StoredTask) -> NewVersion:
        # run under the task's lock: the time is taken there too, so versions and their
        # lastUpdated keep one order
        now, now_us = now_instant()
        resource = task_rules.stamp(
            body,
            task_id=task_id,
            version_id=current.version_id + 1,
            now=now,
            previous=current.resource,
        )
        return NewVersion(resource, indexing.extract(resource), now_us)

    try:
        task = await _storage(request).update_task(task_id, build, wanted)
    except TaskNotFound:
        raise NotFound.single("not-found", "no Task has this id") from None
    except StaleVersion as stale:
        raise _stale(wanted, stale.current) from None
    return _written(request, task, 200)


def _stale(wanted: int | None, current: int) -> VersionConflict:
    text = f'If-Match W/"{wanted}" is not the current version (W/"{current}")'
    return VersionConflict.single("conflict", text)


def _query_pairs(request: Request) -> list[tuple[str, str]]:
    """The query's (name, value) pairs. Starlette replaces bytes that are not UTF-8 with
    U+FFFD, which would then be searched for; a search has to say what it means."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    try:
        return parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidSearch.single("invalid", "the query string is not valid UTF-8") from None


def _paging(pairs: list[tuple[str, str]], lenient: bool) -> tuple[int, int]:
    count, offset = search_params.DEFAULT_COUNT, 0
    for name, raw in pairs:
        if name == "_count":
            count = min(search_params.parse_int(name, raw), search_params.MAX_COUNT)
        elif name == "_offset":
            offset = search_params.parse_int(name, raw, search_params.MAX_OFFSET)
        elif name not in ("_format", "_pretty") and not lenient:
            raise InvalidSearch.single("invalid", f"unknown parameter '{name[:80]}'")
    return count, offset


async def history(request: Request) -> Response:
    await authorize(request, scopes.READ)
    check_accept(request)
    task_id = _task_id(request)
    lenient = prefer(request).get("handling") == "lenient"
    count, offset = _paging(_query_pairs(request), lenient)
    try:
        total, versions = await _storage(request).history(task_id, count, offset)
    except TaskNotFound:
        raise NotFound.single("not-found", "no Task has this id") from None
    base = base_url(request)
    body = bundle.history(
        task_id,
        total,
        [v.resource for v in versions],
        base=base,
        link_path=link_path(base),
        count=count,
        offset=offset,
    )
    return fhir_response(body)


async def _search(request: Request, pairs: list[tuple[str, str]]) -> Response:
    request.state.audit_query = audit.redact_pairs(pairs)  # the form's names too
    lenient = prefer(request).get("handling") == "lenient"
    query = search_params.parse(pairs, lenient=lenient)
    try:
        result = await _unless_client_leaves(request, _storage(request).search(query))
    except SearchTimedOut:
        seconds = settings(request).search_timeout
        raise HttpProblem(
            503,
            "timeout",
            f"the search did not finish within {seconds:g} s (CARETASK_SEARCH_TIMEOUT); "
            "narrow it, with fewer values or parameters, or retry later",
            {"Retry-After": str(max(1, math.ceil(seconds)))},
        ) from None
    base = base_url(request)
    body: dict[str, Any]
    if query.summary_count:
        body = {"resourceType": "Bundle", "type": "searchset", "total": result.total}
    else:
        body = bundle.searchset(
            query,
            result.total,
            [t.resource for t in result.tasks],
            base=base,
            link_path=link_path(base) + "/Task",
            has_more=result.has_more,
            included=[t.resource for t in result.included],
        )
    return fhir_response(body)


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


async def search_get(request: Request) -> Response:
    await authorize(request, scopes.SEARCH)
    check_accept(request)
    return await _search(request, _query_pairs(request))


async def search_post(request: Request) -> Response:
    await authorize(request, scopes.SEARCH)
    check_accept(request)
    if media_type(request) != FORM:
        raise HttpProblem(415, "not-supported", f"POST /Task/_search takes a {FORM} body")
    raw = await read_body(request, settings(request).max_body_bytes)
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidSearch.single("invalid", "the form body could not be parsed") from None
    return await _search(request, [*_query_pairs(request), *form])


async def permalink(request: Request) -> Response:
    """A task's permalink opens the task: a redirect to its read URL (which needs a token)."""
    task_id = bundle.permalink_task_id(request.path_params["token"])
    if task_id is None or not ID_PATTERN.fullmatch(task_id):
        raise NotFound.single("not-found", "unknown permalink")
    request.state.audit_target = (task_id, None)
    return empty_response(302, {"Location": f"{base_url(request)}/Task/{task_id}"})
