"""Bearer tokens on FHIR endpoints: 401 for who-are-you, 403 for not-allowed, each with
Canvas's fixed code and text and what was wrong as diagnostics."""

from __future__ import annotations

import time

from starlette.requests import Request

from caretask.auth import scopes, tokens
from caretask.http.errors import HttpProblem
from caretask.http.state import opened
from caretask.storage.base import ClientRecord, Storage

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="caretask"'}
_INVALID = {"WWW-Authenticate": 'Bearer realm="caretask", error="invalid_token"'}


def _bearer(request: Request) -> str:
    values = request.headers.getlist("authorization")
    if not values:
        raise HttpProblem.unauthenticated("an Authorization: Bearer token is required", _CHALLENGE)
    if len(values) > 1:
        raise HttpProblem.unauthenticated("send exactly one Authorization header", _INVALID)
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise HttpProblem.unauthenticated(
            "the Authorization header must be 'Bearer <token>'", _INVALID
        )
    return token


class ClientRows:
    """Each client's row, read from storage at most once per `ttl` seconds: looking it up
    on every request (for revocation) was a round trip per request; a revoked client is
    refused on every server within `ttl`."""

    def __init__(self, storage: Storage, ttl: float, size: int = 10_000) -> None:
        self._storage = storage
        self._ttl = ttl
        self._size = size
        self._rows: dict[str, tuple[float, ClientRecord | None]] = {}

    async def get(self, client_id: str) -> ClientRecord | None:
        now = time.monotonic()
        hit = self._rows.get(client_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        record = await self._storage.get_client(client_id)
        if len(self._rows) >= self._size and client_id not in self._rows:
            del self._rows[next(iter(self._rows))]
        self._rows[client_id] = (now, record)
        return record


async def authorize(
    request: Request, permission: str | None, resource: str = "Task"
) -> tokens.Claims:
    """Check the request's token and that its scopes grant `permission` on `resource`
    (cruds letters, each needed; None: anything, the handler checking what it needs in
    `request.state.granted`)."""
    state = opened(request)
    try:
        claims = state.tokens.verify(_bearer(request))
    except tokens.InvalidToken:
        raise HttpProblem.unauthenticated(
            "the access token is invalid or expired", _INVALID
        ) from None
    request.state.client_id = claims.client_id  # signed by us: who, even if refused below
    request.state.claims = claims
    client = await state.clients.get(claims.client_id)
    if client is None or client.revoked:
        raise HttpProblem.unauthenticated("the access token's client is no longer active", _INVALID)
    request.state.resource = resource
    # for a request that needs more than `permission`
    request.state.granted = scopes.granted(claims.scope, resource)
    for letter in permission or "":
        require(request, letter)
    return claims


def require(request: Request, permission: str) -> None:
    """403 unless the authorized request's token grants `permission` (a cruds letter) on
    the resource it was authorized for."""
    if permission not in request.state.granted:
        needed = scopes.needed(permission, request.state.resource)
        raise HttpProblem.forbidden(f"this needs the scope {needed}")
