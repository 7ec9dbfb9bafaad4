"""The Subscription endpoints: create, read, update, delete, search, $status, $events,
$get-ws-binding-token, and the websocket channel's endpoint (/ws, the IG's bind-with-token
exchange). Each maps its request to a call of the subscription service and back."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from caretask.auth import scopes, tokens
from caretask.domain import notifications, subscriptions
from caretask.domain.errors import InvalidRequest
from caretask.domain.etag import etag
from caretask.http.endpoint import endpoint
from caretask.http.negotiation import read_json_body, read_optional_json_body
from caretask.http.responses import empty_response, fhir_response
from caretask.http.state import opened, settings
from caretask.http.urls import base_url
from caretask.service.delivery import Binding
from caretask.service.subscriptions import SubscriptionService
from caretask.service.tasks import if_match_version, query_pairs, read_json
from caretask.storage.base import StoredSubscription

SUBSCRIPTION = "Subscription"
BINDING_TTL = 300  # s a websocket binding token is valid for
BIND = "bind-with-token:"


def _service(request: Request) -> SubscriptionService:
    return opened(request).subscriptions


def _seen(request: Request) -> str:
    """The base URL, which delivery uses in its notifications' fullUrls."""
    base = base_url(request)
    opened(request).bases.append(base)
    del opened(request).bases[:-1]
    return base


def _headers(request: Request, stored: StoredSubscription) -> dict[str, str]:
    return {
        "ETag": etag(stored.version_id),
        "Location": f"{_seen(request)}/Subscription/{stored.id}/_history/{stored.version_id}",
    }


def _shown(stored: StoredSubscription) -> dict[str, Any]:
    return subscriptions.shown(stored.resource, stored.status, stored.error)


def _owner(request: Request) -> str:
    """Who the caller is, as a Subscription's creator is recorded."""
    person = request.state.person
    return f"user:{person.username}" if person is not None else f"client:{request.state.client_id}"


def _only(request: Request) -> str | None:
    """A person reaches only the Subscriptions they created (their headers and endpoints
    are another's, as are their notifications); a client acting for itself, every one."""
    return _owner(request) if request.state.person is not None else None


def _target(request: Request, stored: StoredSubscription) -> None:
    request.state.audit_target = (f"Subscription/{stored.id}", stored.version_id)


@endpoint(scopes.CREATE, SUBSCRIPTION)
async def create(request: Request) -> Response:
    raw = await read_json_body(request, settings(request).max_body_bytes)
    stored, secret = await _service(request).create(raw, _owner(request))
    _target(request, stored)
    headers = _headers(request, stored)
    headers["Location"] = headers["Location"].rsplit("/_history/", 1)[0]
    return fhir_response(subscriptions.with_secret(_shown(stored), secret), 201, headers)


@endpoint(scopes.READ, SUBSCRIPTION)
async def read(request: Request) -> Response:
    stored = await _service(request).read(request.path_params["id"], _only(request))
    return fhir_response(_shown(stored), 200, {"ETag": etag(stored.version_id)})


@endpoint(scopes.UPDATE, SUBSCRIPTION)
async def update(request: Request) -> Response:
    raw = await read_json_body(request, settings(request).max_body_bytes)
    wanted = if_match_version(request.headers.get("if-match"))
    stored = await _service(request).update(request.path_params["id"], raw, wanted, _only(request))
    _target(request, stored)
    return fhir_response(_shown(stored), 200, _headers(request, stored))


@endpoint(scopes.DELETE, SUBSCRIPTION)
async def delete(request: Request) -> Response:
    await _service(request).delete(request.path_params["id"], _only(request))
    return empty_response(204)


@endpoint(scopes.SEARCH, SUBSCRIPTION)
async def search(request: Request) -> Response:
    query = request.scope.get("query_string", b"").decode("latin-1")
    wanted = subscriptions.parse_search(query_pairs(query))
    total, found = await _service(request).search(wanted, _only(request))
    base = _seen(request)
    self_link = f"{base}/Subscription" + (f"?{query}" if query else "")
    links = [{"relation": "self", "url": self_link}]
    if wanted.offset + len(found) < total and wanted.count:
        pairs = [p for p in query_pairs(query) if p[0] != "_offset"]
        rest = "&".join(f"{k}={v}" for k, v in pairs)
        sep = "&" if rest else ""
        offset = wanted.offset + wanted.count
        links.append(
            {"relation": "next", "url": f"{base}/Subscription?{rest}{sep}_offset={offset}"}
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/Subscription/{s.id}",
                "resource": _shown(s),
                "search": {"mode": "match"},
            }
            for s in found
        ],
    }
    return fhir_response(bundle)


async def _operation_pairs(request: Request) -> list[tuple[str, str]]:
    """An operation's parameters: the query string's, and a POSTed Parameters body's."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    pairs = [p for p in query_pairs(query) if p[0] not in ("_format", "_pretty")]
    if request.method == "POST":
        raw = await read_optional_json_body(request, settings(request).max_body_bytes)
        if raw.strip():
            limits = _service(request).limits
            body = read_json(raw, limits, "Parameters")
            pairs += subscriptions.operation_pairs(body, limits.max_depth)
    return pairs


@endpoint(scopes.READ, SUBSCRIPTION)
async def instance_status(request: Request) -> Response:
    await _operation_pairs(request)  # at the instance level, id and status are ignored
    stored = await _service(request).read(request.path_params["id"], _only(request))
    status = _service(request).status_of(stored)
    return fhir_response(notifications.status_searchset(_seen(request), [status]))


@endpoint(scopes.SEARCH, SUBSCRIPTION)
async def type_status(request: Request) -> Response:
    pairs = await _operation_pairs(request)
    ids = [v for n, v in pairs if n == "id"]
    statuses = [v for n, v in pairs if n == "status"]
    unknown = sorted({n for n, _ in pairs} - {"id", "status"})
    if unknown:
        raise InvalidRequest.single(
            "not-supported", f"$status has no parameter '{unknown[0][:40]}'"
        )
    found = await _service(request).statuses(ids, statuses, _only(request))
    return fhir_response(notifications.status_searchset(_seen(request), found))


@endpoint(scopes.READ, SUBSCRIPTION)
async def events(request: Request) -> Response:
    wanted = subscriptions.parse_events(await _operation_pairs(request))
    bundle = await _service(request).events(
        request.path_params["id"], wanted, _seen(request), _only(request)
    )
    return fhir_response(bundle)


@endpoint(scopes.READ, SUBSCRIPTION)
async def binding_token(request: Request) -> Response:
    pairs = await _operation_pairs(request)
    ids = [v for n, v in pairs if n == "id"]
    if "id" in request.path_params:
        ids = [request.path_params["id"]]
    chosen = await _service(request).websocket_subscriptions(ids, _only(request))
    state = opened(request)
    token = tokens.issue_binding(
        state.signing_key, request.state.client_id, [s.id for s in chosen], BINDING_TTL
    )
    expires = datetime.fromtimestamp(int(time.time()) + BINDING_TTL, UTC).isoformat()
    base = _seen(request)
    socket_url = "ws" + base.removeprefix("http") + "/ws"
    parameters = [
        {"name": "token", "valueString": token},
        {"name": "expiration", "valueDateTime": expires},
        *({"name": "subscription", "valueString": s.id} for s in chosen),
        {"name": "websocket-url", "valueUrl": socket_url},
    ]
    return fhir_response({"resourceType": "Parameters", "parameter": parameters})


async def websocket(socket: WebSocket) -> None:
    """The websocket channel: the client sends `bind-with-token: <token>` (from
    $get-ws-binding-token); the server answers with a handshake per Subscription the token
    names, then sends their event notifications and heartbeats as they happen."""
    state = socket.app.state.caretask.opened
    await socket.accept()
    bound: list[tuple[str, Binding]] = []
    try:
        while True:
            text = await socket.receive_text()
            if not text.startswith(BIND):
                await socket.send_text("error: send 'bind-with-token: <token>'")
                continue
            try:
                _, ids = tokens.verify_binding(state.signing_key, text[len(BIND) :].strip())
            except tokens.InvalidToken:
                await socket.send_text("error: the binding token is invalid or expired")
                continue
            for subscription_id in ids:
                stored = await state.storage.read_subscription(subscription_id)
                if stored is None or stored.channel != "websocket":
                    await socket.send_text(f"error: no websocket Subscription/{subscription_id}")
                    continue
                binding = await state.hub.bind(stored, socket.send_text)
                bound.append((subscription_id, binding))
    except WebSocketDisconnect:
        pass
    finally:
        for subscription_id, binding in bound:
            state.hub.unbind(subscription_id, binding)
