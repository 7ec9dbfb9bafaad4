"""The route table: each endpoint once, with what every part of the server needs to know of
it. The Starlette routes, the audit trail's names for requests, the CapabilityStatement's
interactions and the OpenAPI paths are derived from it, so that a new endpoint is one entry
here and one handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute, compile_path
from starlette.types import Receive, Scope, Send

from caretask.domain import etag
from caretask.domain.capability import capability_statement
from caretask.domain.http_dates import PATTERN as HTTP_DATE_PATTERN
from caretask.domain.profiles import DEFAULT as DEFAULT_PROFILE
from caretask.domain.profiles import Profile
from caretask.domain.references import ID_PATTERN, VERSION_FORM, version_number
from caretask.http import (
    board,
    bundles,
    claims,
    metadata,
    metrics,
    sign_in,
    subscriptions,
    tasks,
    token_endpoint,
)
from caretask.http.audit import AuditName
from caretask.http.endpoint import Handler
from caretask.http.negotiation import check_accept
from caretask.http.openapi import (
    BODY_ERRORS,
    EDGE_ERRORS,
    FEED_QUERY,
    FHIR_ERRORS,
    LOCATION,
    PAGING,
    PREFER_SEARCH,
    PREFER_WRITE,
    RETRY_AFTER,
    TASK_ID,
    VERSION_HEADERS,
    Operation,
    Schema,
    authorize_responses,
    bundle_too_large,
    condition_query,
    errors,
    fhir,
    fhir_body,
    form_body,
    json_body,
    openapi_document,
    outcome,
    patch_body,
    path_parameter,
    ref,
    request_header,
    search_form,
    search_query,
    search_responses,
    subset_query,
    task_body,
    token_responses,
    validate_body,
    written,
)
from caretask.http.responses import empty_response, fhir_response
from caretask.http.state import app_state, settings
from caretask.http.urls import base_url


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    # None: an interaction FHIR defines that this server does not serve; listed so that the
    # audit trail names a request for it as FHIR does
    handler: Handler | None
    doc: Operation | None
    # the audit trail's name for a request: a FHIR restful interaction, or login
    interaction: str = "unknown"
    # a FHIR interaction on Task: the CapabilityStatement lists it, and it needs a token
    task: bool = False
    # a path (a prefix if it ends in `*`) whose every request, whatever its method and
    # whether or not it reached a route, the audit trail names by `interaction`
    claims: str | None = None
    audited: bool = True
    # the other interactions its handler serves, that it names a request by (audit_interaction)
    also: tuple[str, ...] = ()
    # the resource type of a FHIR interaction (`task`): the CapabilityStatement's entry
    resource: str = "Task"
    # a FHIR operation's name (`validate`): the CapabilityStatement lists it
    operation: str | None = None


async def capabilities(request: Request) -> Response:
    check_accept(request)
    state = app_state(request)
    cors = bool(state.settings.cors_origins)
    document = capability_statement(
        base_url(request),
        state.started_at,
        INTERACTIONS,
        state.settings.profile,
        cors=cors,
        subscription_interactions=SUBSCRIPTION_INTERACTIONS,
        operations=TASK_OPERATIONS,
    )
    return fhir_response(document)


@lru_cache(maxsize=16)
def openapi_json(base: str, profile: Profile = DEFAULT_PROFILE) -> bytes:
    """Built once per base URL and profile: the document is some 100 KB and never changes."""
    return orjson.dumps(openapi_document(base, _openapi_paths(), profile))


async def openapi(request: Request) -> Response:
    document = openapi_json(base_url(request), settings(request).profile)
    return Response(document, media_type="application/json")


IF_MATCH = request_header(
    "If-Match",
    {"type": "string", "pattern": etag.READ_PATTERN},
    "the version being replaced; another is a 412",
)
IF_UNMODIFIED_SINCE = request_header(
    "If-Unmodified-Since",
    {"type": "string", "pattern": HTTP_DATE_PATTERN},
    "an HTTP-date; a 412 if the Task changed after it",
)

_TOKEN = Operation(
    "token",
    "OAuth 2.0 client credentials (Canvas form)",
    token_responses(token_endpoint.MAX_FORM_BYTES),
    body=form_body(ref("TokenRequest")),
)

_CLAIMED = fhir(
    "StoredTask",
    "the Task as it now is",
    {**VERSION_HEADERS, "Location": LOCATION},
)


def _claim_body(parameters: str) -> Schema:
    return {
        "required": False,
        "description": f"a Parameters resource: {parameters}",
        "content": {"application/fhir+json": {"schema": ref("Parameters")}},
    }


_FEED_RESPONSES = {
    "200": fhir("ChangeFeedBundle", "one page of changes"),
    **errors(*FHIR_ERRORS),
}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/metadata",
        capabilities,
        Operation(
            "capabilities",
            "The CapabilityStatement",
            {
                "200": fhir("CapabilityStatement", "what this server supports"),
                **errors(*EDGE_ERRORS),
            },
        ),
        interaction="capabilities",
        claims="/metadata",
    ),
    Endpoint(
        "GET",
        "/openapi.json",
        openapi,
        Operation(
            "openapi",
            "This document",
            {
                "200": json_body(
                    {"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1"
                ),
                **errors(*EDGE_ERRORS),
            },
        ),
    ),
    Endpoint(
        "GET",
        "/.well-known/smart-configuration",
        metadata.smart,
        Operation(
            "smartConfiguration",
            "SMART on FHIR discovery",
            {
                "200": json_body(ref("SmartConfiguration"), "the token endpoint and scopes"),
                **errors(*EDGE_ERRORS),
            },
        ),
    ),
    Endpoint(
        "GET",
        "/healthz",
        metadata.healthz,
        Operation(
            "healthz",
            "Liveness",
            {"200": fhir("Health", "the process runs"), **errors(*EDGE_ERRORS)},
        ),
        audited=False,
    ),
    Endpoint(
        "GET",
        "/readyz",
        metadata.readyz,
        Operation(
            "readyz",
            "Readiness: the database answers and takes writes",
            {
                "200": fhir("Health", "ready"),
                "503": outcome(
                    "the database is unreachable, read-only, its disk full, or too slow to "
                    "answer within a load balancer's usual 5 s timeout",
                    {"Retry-After": RETRY_AFTER},
                ),
                **errors(*EDGE_ERRORS),
            },
        ),
        audited=False,
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics.scrape,
        Operation(
            "metrics",
            "Metrics in the Prometheus text format (CARETASK_METRICS: off, open, or a bearer "
            "token)",
            {
                "200": {
                    "description": "every metric of every worker",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": outcome(
                    "CARETASK_METRICS is a token, and the request did not send it",
                    {"WWW-Authenticate": {"schema": {"type": "string"}}},
                ),
                "404": outcome("metrics are off"),
                **errors(*EDGE_ERRORS),
            },
        ),
        audited=False,
    ),
    Endpoint(
        "POST",
        "/auth/token/",
        token_endpoint.token,
        _TOKEN,
        interaction="login",
        claims="/auth/token*",
    ),
    Endpoint(
        "GET",
        "/auth/authorize",
        sign_in.authorize_get,
        Operation(
            "authorize",
            "OAuth 2.0 authorization code with PKCE (SMART App Launch): the sign-in page",
            authorize_responses(False, sign_in.MAX_FORM_BYTES),
            tuple(
                {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                for name in sign_in.PARAMETERS
            ),
        ),
        interaction="login",
        claims="/auth/authorize*",
    ),
    Endpoint(
        "POST",
        "/auth/authorize",
        sign_in.authorize_post,
        Operation(
            "signIn",
            "The sign-in form: the authorization request's parameters, csrf, username, password",
            authorize_responses(True, sign_in.MAX_FORM_BYTES),
            body=form_body({"type": "object", "additionalProperties": {"type": "string"}}),
        ),
        interaction="login",
        claims="/auth/authorize*",
    ),
    Endpoint(
        "POST",
        "/auth/token",
        token_endpoint.token,
        replace(_TOKEN, id="tokenWithoutSlash"),
        interaction="login",
        claims="/auth/token*",
    ),
    Endpoint(
        "POST",
        "/",
        bundles.process,
        Operation(
            "batchOrTransaction",
            "A batch or transaction Bundle of Task interactions",
            {
                "200": fhir("ResponseBundle", "the batch-response or transaction-response"),
                **errors(*FHIR_ERRORS, 404, 408, 412, 415, 422),
                "413": bundle_too_large(),
            },
            (PREFER_WRITE,),
            fhir_body(
                "TransactionBundle",
                "a Bundle of type batch (each entry on its own) or transaction (all or none); "
                "a failed transaction is one OperationOutcome naming the entry",
            ),
        ),
        interaction="transaction",
        task=True,
        also=("batch",),
    ),
    Endpoint(
        "GET",
        "/Task",
        tasks.search_get,
        Operation(
            "searchTasks",
            "Search (a comma is OR, a repeated parameter AND)",
            search_responses(),
            search_query(),
        ),
        interaction="search-type",
        task=True,
    ),
    Endpoint(
        "POST",
        "/Task",
        tasks.create,
        Operation(
            "createTask",
            "Create a Task",
            {
                "201": written("created"),
                "200": written("If-None-Exist found one Task: that Task, nothing created"),
                **errors(*FHIR_ERRORS, *BODY_ERRORS, 412, 422),
            },
            (
                PREFER_WRITE,
                request_header(
                    "If-None-Exist",
                    {"type": "string"},
                    "a Task search (identifier=http://x|1): create only if it finds none; "
                    "one found is answered 200, several 412",
                ),
            ),
            task_body("the Task; an id in it is ignored"),
        ),
        interaction="create",
        task=True,
    ),
    Endpoint(
        "PUT",
        "/Task",
        tasks.update_by_search,
        Operation(
            "updateTaskBySearch",
            "Conditional update: replace the Task the search finds, or create one",
            {
                "200": written("the one Task the search found, updated"),
                "201": written("no Task matched: created (the create scope is needed too)"),
                **errors(*FHIR_ERRORS, *BODY_ERRORS, 412, 422),
            },
            (*condition_query(), IF_MATCH, IF_UNMODIFIED_SINCE, PREFER_WRITE),
            task_body(
                "the whole new Task; an id in it must be the found Task's (with no match, "
                "none: this server assigns ids)"
            ),
        ),
        interaction="update",
        task=True,
    ),
    Endpoint(
        "PATCH",
        "/Task",
        tasks.patch_by_search,
        Operation(
            "patchTaskBySearch",
            "Conditional patch: patch the one Task the search finds (none: 404, several: 412)",
            {
                "200": written("patched"),
                **errors(*FHIR_ERRORS, *BODY_ERRORS, 404, 412),
                "409": outcome("a JSON Patch test operation failed: the Task is not as it expects"),
                "422": outcome(
                    "the patch cannot be applied to the Task, or its result is not acceptable"
                ),
            },
            (*condition_query(), IF_MATCH, IF_UNMODIFIED_SINCE, PREFER_WRITE),
            patch_body(),
        ),
        interaction="patch",
        task=True,
    ),
    Endpoint(
        "DELETE",
        "/Task",
        tasks.delete_by_search,
        Operation(
            "deleteTaskBySearch",
            "Conditional delete: delete the one Task the search finds (none: nothing to do, "
            "several: 412)",
            {
                "204": {
                    "description": "deleted (with the deleted version's ETag), or nothing matched",
                    "headers": {
                        name: {**header, "required": False}
                        for name, header in VERSION_HEADERS.items()
                    },
                },
                **errors(*FHIR_ERRORS, 412),
            },
            (*condition_query(), IF_MATCH),
        ),
        interaction="delete",
        task=True,
    ),
    Endpoint(
        "POST",
        "/Task/_search",
        tasks.search_post,
        Operation(
            "searchTasksByForm",
            "Search with the parameters in a form body",
            {**search_responses(), **errors(*BODY_ERRORS)},
            (PREFER_SEARCH,),
            search_form(),
        ),
        interaction="search-type",
        task=True,
    ),
    # before /Task/{id}, whose other methods' route would take the path
    Endpoint(
        "POST",
        "/Task/$validate",
        tasks.validate,
        Operation(
            "validateTask",
            "Validate a Task (FHIR's $validate): every problem, or one informational issue; "
            "stores nothing",
            {
                "200": fhir("OperationOutcome", "the problems found, or that the Task is valid"),
                **errors(*FHIR_ERRORS, *BODY_ERRORS),
            },
            body=validate_body(),
        ),
        interaction="operation",
        task=True,
        operation="validate",
    ),
    Endpoint(
        "POST",
        "/Task/$claim-next",
        claims.claim_next,
        Operation(
            "claimNextTask",
            "Claim the first unowned Task a search finds, in its order, atomically: two "
            "claimers never get the same Task",
            {
                "200": _CLAIMED,
                **errors(*FHIR_ERRORS, *BODY_ERRORS),
                "404": outcome("no unowned task matches"),
                "409": outcome("the matching tasks were all claimed while this claim ran"),
            },
            body=_claim_body(
                "criteria (valueString: a Task search as GET /Task takes it, such as "
                "group=Group/x&status=requested&_sort=due); owner (valueReference to a "
                "Practitioner: required of a system client, a person claims for themself)"
            ),
        ),
        interaction="operation",
        task=True,
        operation="claim-next",
    ),
    Endpoint(
        "GET",
        "/Task/_history",
        tasks.type_history,
        Operation(
            "taskChanges",
            "The change feed: every version of every Task, deletes included, newest first",
            _FEED_RESPONSES,
            (*FEED_QUERY, *subset_query(), PREFER_SEARCH),
        ),
        interaction="history-type",
        task=True,
    ),
    Endpoint(
        "GET",
        "/_history",
        tasks.system_history,
        Operation(
            "systemChanges",
            "The change feed of the whole server (only Tasks are stored: as /Task/_history)",
            _FEED_RESPONSES,
            (*FEED_QUERY, *subset_query(), PREFER_SEARCH),
        ),
        interaction="history-system",
        task=True,
    ),
    Endpoint(
        "GET",
        "/Task/{id}",
        tasks.read,
        Operation(
            "readTask",
            "Read the current version",
            {
                "200": fhir("ReadTask", "the Task", VERSION_HEADERS),
                "304": {
                    "description": "If-None-Match is the current version",
                    "headers": {"ETag": VERSION_HEADERS["ETag"]},
                },
                **errors(*FHIR_ERRORS, 404, 410),
            },
            (
                request_header("If-None-Match", {"type": "string"}, "the current ETag answers 304"),
                *subset_query(),
            ),
            path_parameters=(TASK_ID,),
        ),
        interaction="read",
        task=True,
    ),
    Endpoint(
        "PUT",
        "/Task/{id}",
        tasks.update,
        Operation(
            "updateTask",
            "Replace the Task (a new version)",
            {"200": written("updated"), **errors(*FHIR_ERRORS, *BODY_ERRORS, 404, 412, 422)},
            (IF_MATCH, IF_UNMODIFIED_SINCE, PREFER_WRITE),
            task_body("the whole new Task; an id in it must be the URL's"),
            path_parameters=(TASK_ID,),
        ),
        interaction="update",
        task=True,
    ),
    Endpoint(
        "PATCH",
        "/Task/{id}",
        tasks.patch,
        Operation(
            "patchTask",
            "Patch the Task (a new version): a JSON Patch or a FHIRPath Patch",
            {
                "200": written("patched"),
                **errors(*FHIR_ERRORS, *BODY_ERRORS, 404, 410, 412),
                "409": outcome("a JSON Patch test operation failed: the Task is not as it expects"),
                "422": outcome(
                    "the patch cannot be applied to this Task (a path that selects nothing, or "
                    "more than one element), or its result is not an acceptable Task"
                ),
            },
            (IF_MATCH, IF_UNMODIFIED_SINCE, PREFER_WRITE),
            patch_body(),
            path_parameters=(TASK_ID,),
        ),
        interaction="patch",
        task=True,
    ),
    Endpoint(
        "DELETE",
        "/Task/{id}",
        tasks.delete,
        Operation(
            "deleteTask",
            "Delete the Task (a new version marks it deleted; deleting it again changes nothing)",
            {
                "204": {"description": "deleted", "headers": VERSION_HEADERS},
                **errors(*FHIR_ERRORS, 404, 412),
            },
            (IF_MATCH,),
            path_parameters=(TASK_ID,),
        ),
        interaction="delete",
        task=True,
    ),
    Endpoint(
        "POST",
        "/Task/{id}/$claim",
        claims.claim,
        Operation(
            "claimTask",
            "Claim the Task: it becomes the caller's if it has no owner (theirs already: "
            "unchanged)",
            {
                "200": _CLAIMED,
                **errors(*FHIR_ERRORS, *BODY_ERRORS, 404, 410),
                "409": outcome("the Task is someone else's: the text names its owner"),
            },
            body=_claim_body(
                "owner (valueReference to a Practitioner): required of a system client; a "
                "person claims for themself (no body needed)"
            ),
            path_parameters=(TASK_ID,),
        ),
        interaction="operation",
        task=True,
        operation="claim",
    ),
    Endpoint(
        "POST",
        "/Task/{id}/$release",
        claims.release,
        Operation(
            "releaseTask",
            "Release the Task: it has no owner any more (none already: unchanged). Its "
            "owner, or a system client, releases it",
            {"200": _CLAIMED, **errors(*FHIR_ERRORS, *BODY_ERRORS, 404, 410)},
            body=_claim_body("no parameters (no body needed)"),
            path_parameters=(TASK_ID,),
        ),
        interaction="operation",
        task=True,
        operation="release",
    ),
    Endpoint(
        "GET",
        "/Task/{id}/_history",
        tasks.history,
        Operation(
            "taskHistory",
            "Every version, newest first",
            {"200": fhir("HistoryBundle", "one page of versions"), **errors(*FHIR_ERRORS, 404)},
            (TASK_ID, *PAGING, *subset_query(count=True), PREFER_SEARCH),
        ),
        interaction="history-instance",
        task=True,
    ),
    Endpoint(
        "GET",
        "/Task/{id}/_history/{vid}",
        tasks.vread,
        Operation(
            "readTaskVersion",
            "Read one version",
            {
                "200": fhir("ReadTask", "that version", VERSION_HEADERS),
                **errors(*FHIR_ERRORS, 404, 410),
            },
            (
                TASK_ID,
                path_parameter("vid", {"type": "string", "pattern": f"^{VERSION_FORM}$"}),
                *subset_query(),
            ),
        ),
        interaction="vread",
        task=True,
    ),
    Endpoint(
        "GET",
        "/permalinks/v1/{token}",
        tasks.permalink,
        Operation(
            "permalink",
            "A Task's permalink: a redirect to its read URL",
            {
                "302": {"description": "to the Task", "headers": {"Location": LOCATION}},
                "404": outcome("not a permalink of this server"),
                **errors(*EDGE_ERRORS),
            },
            (path_parameter("token", {"type": "string"}),),
        ),
        interaction="read",
        claims="/permalinks/*",
    ),
)

_SUBSCRIPTION_ID = path_parameter("id", {"type": "string", "pattern": TASK_ID["schema"]["pattern"]})
_SUBSCRIPTION_BODY = fhir_body("Subscription", "the Subscription (Subscriptions Backport IG, R4)")
_SUBSCRIPTION_WRITTEN = {
    "ETag": VERSION_HEADERS["ETag"],
    "Location": {"description": "the Subscription's URL", "schema": {"type": "string"}},
}
_OPERATION_BODY = {
    "required": False,
    "content": {"application/fhir+json": {"schema": ref("Parameters")}},
}


def _subscription_operation(
    method: str,
    path: str,
    handler: Any,
    op_id: str,
    summary: str,
    permission_doc: str,
    answer: Any,
    parameters: tuple[Any, ...] = (),
    has_id: bool = True,
) -> Endpoint:
    return Endpoint(
        method,
        path,
        handler,
        Operation(
            op_id + ("Post" if method == "POST" else ""),
            f"{summary} ({permission_doc})",
            {
                "200": answer,
                **errors(*FHIR_ERRORS, 404, *((*BODY_ERRORS,) if method == "POST" else ())),
            },
            parameters,
            _OPERATION_BODY if method == "POST" else None,
            path_parameters=(_SUBSCRIPTION_ID,) if has_id else (),
        ),
        interaction="operation",
        task=True,
        resource="Subscription",
    )


def _query(name: str, description: str, many: bool = False) -> Any:
    schema: Any = {"type": "string"}
    if many:
        schema = {"type": "array", "items": schema}
    param = {"name": name, "in": "query", "required": False, "schema": schema}
    param["description"] = description
    if many:
        param.update(style="form", explode=True)
    return param


_STATUS_QUERY = (
    _query("id", "Subscription ids (none: every one)", many=True),
    _query("status", "Subscription statuses (none: any)", many=True),
)
_EVENTS_QUERY = (
    _query("eventsSinceNumber", "the first event number (inclusive)"),
    _query("eventsUntilNumber", "the last event number (inclusive)"),
    _query("content", "empty, id-only or full-resource"),
)
_BINDING = fhir("Parameters", "token, expiration, subscription, websocket-url")
_STATUS_BUNDLE = fhir("SubscriptionBundle", "a searchset of SubscriptionStatus Parameters")

SUBSCRIPTION_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/Subscription",
        subscriptions.search,
        Operation(
            "searchSubscriptions",
            "Search Subscriptions by url (the endpoint) and status",
            {"200": fhir("SubscriptionBundle", "a searchset"), **errors(*FHIR_ERRORS)},
            (
                _query("url", "the channel endpoint, exactly"),
                _query("status", "requested, active, error or off (a comma is OR)"),
                _query("_count", "page size"),
                _query("_offset", "entries to skip"),
            ),
        ),
        interaction="search-type",
        task=True,
        resource="Subscription",
    ),
    Endpoint(
        "POST",
        "/Subscription",
        subscriptions.create,
        Operation(
            "createSubscription",
            "Create a Subscription; the answer shows its signing secret, once",
            {
                "201": fhir("Subscription", "created", _SUBSCRIPTION_WRITTEN),
                **errors(*FHIR_ERRORS, *BODY_ERRORS),
                "422": outcome("a topic, channel, payload or endpoint this server does not accept"),
            },
            body=_SUBSCRIPTION_BODY,
        ),
        interaction="create",
        task=True,
        resource="Subscription",
    ),
    *(
        _subscription_operation(
            method,
            "/Subscription/$status",
            subscriptions.type_status,
            "subscriptionsStatus",
            "Status of Subscriptions",
            "search",
            _STATUS_BUNDLE,
            _STATUS_QUERY,
            has_id=False,
        )
        for method in ("GET", "POST")
    ),
    *(
        _subscription_operation(
            method,
            "/Subscription/$get-ws-binding-token",
            subscriptions.binding_token,
            "subscriptionsBindingToken",
            "A token to bind a websocket to Subscriptions",
            "read",
            _BINDING,
            (_query("id", "websocket Subscription ids", many=True),),
            has_id=False,
        )
        for method in ("GET", "POST")
    ),
    Endpoint(
        "GET",
        "/Subscription/{id}",
        subscriptions.read,
        Operation(
            "readSubscription",
            "Read a Subscription (its status the server's)",
            {
                "200": fhir("Subscription", "the Subscription", {"ETag": VERSION_HEADERS["ETag"]}),
                **errors(*FHIR_ERRORS, 404),
            },
            path_parameters=(_SUBSCRIPTION_ID,),
        ),
        interaction="read",
        task=True,
        resource="Subscription",
    ),
    Endpoint(
        "PUT",
        "/Subscription/{id}",
        subscriptions.update,
        Operation(
            "updateSubscription",
            "Replace a Subscription (status off stops it; a changed channel handshakes again)",
            {
                "200": fhir("Subscription", "updated", _SUBSCRIPTION_WRITTEN),
                **errors(*FHIR_ERRORS, *BODY_ERRORS, 404, 412),
                "422": outcome("a topic, channel, payload or endpoint this server does not accept"),
            },
            (IF_MATCH,),
            _SUBSCRIPTION_BODY,
            path_parameters=(_SUBSCRIPTION_ID,),
        ),
        interaction="update",
        task=True,
        resource="Subscription",
    ),
    Endpoint(
        "DELETE",
        "/Subscription/{id}",
        subscriptions.delete,
        Operation(
            "deleteSubscription",
            "Delete a Subscription and its kept events",
            {"204": {"description": "deleted"}, **errors(*FHIR_ERRORS, 404)},
            path_parameters=(_SUBSCRIPTION_ID,),
        ),
        interaction="delete",
        task=True,
        resource="Subscription",
    ),
    *(
        _subscription_operation(
            method,
            "/Subscription/{id}/$status",
            subscriptions.instance_status,
            "subscriptionStatus",
            "A Subscription's status",
            "read",
            _STATUS_BUNDLE,
        )
        for method in ("GET", "POST")
    ),
    *(
        _subscription_operation(
            method,
            "/Subscription/{id}/$events",
            subscriptions.events,
            "subscriptionEvents",
            "Replay kept events by number",
            "read",
            fhir("SubscriptionBundle", "a history Bundle of type query-event"),
            _EVENTS_QUERY,
        )
        for method in ("GET", "POST")
    ),
    *(
        _subscription_operation(
            method,
            "/Subscription/{id}/$get-ws-binding-token",
            subscriptions.binding_token,
            "subscriptionBindingToken",
            "A token to bind a websocket to this Subscription",
            "read",
            _BINDING,
        )
        for method in ("GET", "POST")
    ),
)
ENDPOINTS = (*ENDPOINTS, *SUBSCRIPTION_ENDPOINTS)

SERVED = tuple(e for e in ENDPOINTS if e.handler is not None)
INTERACTIONS = tuple(
    i for e in SERVED if e.task and e.resource == "Task" for i in (e.interaction, *e.also)
)
TASK_OPERATIONS = tuple(e.operation for e in SERVED if e.operation and e.resource == "Task")
SUBSCRIPTION_INTERACTIONS = tuple(
    e.interaction for e in SERVED if e.task and e.resource == "Subscription"
)
UNAUDITED = frozenset(e.path for e in ENDPOINTS if not e.audited)


def allowed_methods(path: str) -> tuple[str, ...]:
    """The methods served on a path of the table, in its order: each served entry's, HEAD
    with GET (Starlette answers it with the GET handler), and OPTIONS (every path's)."""
    methods: list[str] = []
    for endpoint in SERVED:
        if endpoint.path == path:
            methods.append(endpoint.method)
            if endpoint.method == "GET":
                methods.append("HEAD")
    return (*methods, "OPTIONS")


# every method any path serves: what a CORS preflight may ask for
SERVED_METHODS = tuple(dict.fromkeys(m for e in SERVED for m in allowed_methods(e.path)))


class _OtherMethods:
    """The route of a path's every method the table does not serve on it: OPTIONS is
    answered (204, with Allow), any other method is a 405 whose Allow lists the path's
    methods. Starlette's own 405 named only the methods of the first route that matched the
    path, one of several for the path (GET and HEAD on a Task's URL, where PUT works too).
    An ASGI app, not a function: Starlette gives a function's route GET only."""

    def __init__(self, path: str) -> None:
        self.allow = ", ".join(allowed_methods(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "OPTIONS":
            raise HTTPException(405, headers={"Allow": self.allow})
        await empty_response(204, {"Allow": self.allow})(scope, receive, send)


WEBSOCKET_PATH = "/ws"


@dataclass(frozen=True)
class Page:
    """A page of the task board (or one of its static files): for people's browsers, not
    FHIR, so not in the CapabilityStatement, the OpenAPI document (not an API: HTML and
    scripts, that no API client calls) or the audit trail (it reads and writes nothing; the
    API calls its scripts make are audited as any other). No token: the board signs in in
    the browser, and no page carries data."""

    method: str
    path: str
    handler: Handler


BOARD_PREFIX = "/app/"
PAGES: tuple[Page, ...] = (
    Page("GET", "/app/", board.board),
    Page("GET", "/app/callback", board.callback),
    Page("GET", "/app/new", board.new_task),
    Page("GET", "/app/tasks/{id}", board.task_page),
    Page("GET", "/app/static/{version}/{path:path}", board.static),
    # every other path under /app/: the board's own not-found page
    Page("GET", "/app/{rest:path}", board.not_found),
)


def routes() -> list[BaseRoute]:
    """The application's routes: the table's, in its order (Starlette tries them in turn),
    then one per path for the methods that path does not serve (tried only when no served
    route matched: a route for any method would otherwise take the requests of later
    entries' paths that it also matches)."""
    served = [Route(e.path, e.handler, methods=[e.method]) for e in SERVED if e.handler]
    paths = dict.fromkeys(e.path for e in SERVED)
    other = [Route(path, _OtherMethods(path)) for path in paths]
    pages = [Route(p.path, p.handler, methods=[p.method]) for p in PAGES]
    page_other = [Route(p.path, _OtherPageMethods(p.method)) for p in PAGES]
    # the websocket channel of subscriptions (its own protocol: not in the table)
    socket = WebSocketRoute(WEBSOCKET_PATH, subscriptions.websocket)
    return [*served, *other, *pages, *page_other, socket]


class _OtherPageMethods(_OtherMethods):
    """A board page's other methods: OPTIONS answered, any other a 405."""

    def __init__(self, method: str) -> None:
        self.allow = ", ".join((method, "HEAD", "OPTIONS") if method == "GET" else (method,))


def _openapi_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for endpoint in SERVED:
        doc = endpoint.doc
        assert doc is not None, endpoint.path
        item = paths.setdefault(endpoint.path, {})
        if doc.path_parameters:
            item["parameters"] = list(doc.path_parameters)
        item[endpoint.method.lower()] = doc.render(token=endpoint.task)
    return paths


# --- the audit trail's names -------------------------------------------------------------------

_BY_ROUTE: Mapping[tuple[str, str], Endpoint] = {(e.path, e.method): e for e in ENDPOINTS}
_CLAIMS = tuple((e.claims, e) for e in ENDPOINTS if e.claims is not None)
# each path's regex as the router matches it, then as its slash redirect would (one trailing
# slash allowed)
_ROUTED = tuple((compile_path(e.path)[0], e) for e in ENDPOINTS if e.claims is None)
_SLASHED = tuple((re.compile(r.pattern.removesuffix("$") + "/?$"), e) for r, e in _ROUTED)


def _named(interaction: str, params: Mapping[str, Any], resource: str = "Task") -> AuditName:
    task_id = params.get("id")
    if task_id is not None and not ID_PATTERN.fullmatch(task_id):
        task_id = None  # not an id: it names nothing, and may be anything an attacker sent
    if task_id is not None and resource != "Task":
        task_id = f"{resource}/{task_id}"  # a bare id is a Task's
    vid = params.get("vid")
    return interaction, task_id, None if vid is None else version_number(vid)


def classify(method: str, path: str) -> AuditName:
    """The name of a request by its method and path: that of the entry that claims its path,
    else of the one whose path and method it matches, else `unknown` with the task id and
    version that the first entry whose path it matches finds in it."""
    for prefix, endpoint in _CLAIMS:
        if path == prefix or (prefix.endswith("*") and path.startswith(prefix[:-1])):
            return endpoint.interaction, None, None
    shape = None
    for regex, endpoint in (*_ROUTED, *_SLASHED):
        match = regex.match(path)
        if match is None:
            continue
        if endpoint.method == method:
            return _named(endpoint.interaction, match.groupdict(), endpoint.resource)
        shape = shape or match
    return _named("unknown", shape.groupdict() if shape is not None else {})


def audit_name(scope: Scope) -> AuditName:
    """The name of a request from the route it reached; one that reached none (refused
    before routing, or not found) by its method and path."""
    method: str = scope["method"]
    if scope["path"].startswith(BOARD_PREFIX):
        return "board", None, None  # the board's pages (metrics and logs name them so)
    route = scope.get("route")
    endpoint = _BY_ROUTE.get((route.path, method)) if isinstance(route, Route) else None
    if endpoint is None:  # not routed, or not by its method (a 405)
        return classify(method, scope["path"])
    return _named(endpoint.interaction, scope.get("path_params", {}), endpoint.resource)
