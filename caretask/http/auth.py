"""Bearer tokens on FHIR endpoints: 401 for who-are-you, 403 for not-allowed, each with
Canvas's fixed code and text and what was wrong as diagnostics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from starlette.requests import Request

from caretask.auth import scopes, tokens
from caretask.auth.clients import BOARD_CLIENT_ID
from caretask.domain.people import Person
from caretask.http.errors import HttpProblem
from caretask.http.state import opened
from caretask.storage.base import ClientRecord, Storage, UserRecord

R = TypeVar("R")

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


class _Rows(Generic[R]):
    """Rows by key, each read from storage at most once per `ttl` seconds: looking one up
    on every request (for revocation) was a round trip per request; a revoked client or a
    disabled user is refused on every server within `ttl`."""

    def __init__(
        self, load: Callable[[str], Awaitable[R | None]], ttl: float, size: int = 10_000
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._size = size
        self._rows: dict[str, tuple[float, R | None]] = {}

    async def get(self, key: str) -> R | None:
        now = time.monotonic()
        hit = self._rows.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        record = await self._load(key)
        if len(self._rows) >= self._size and key not in self._rows:
            del self._rows[next(iter(self._rows))]
        self._rows[key] = (now, record)
        return record


class ClientRows(_Rows[ClientRecord]):
    def __init__(self, storage: Storage, ttl: float, size: int = 10_000) -> None:
        super().__init__(storage.get_client, ttl, size)


class UserRows(_Rows[UserRecord]):
    """Users' rows (a person's token is refused once the user is disabled)."""

    def __init__(self, storage: Storage, ttl: float, size: int = 10_000) -> None:
        super().__init__(storage.get_user, ttl, size)


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
    request.state.person = None
    if claims.user is not None:
        assert claims.fhir_user is not None  # tokens.verify: a person's token names both
        request.state.audit_user = (claims.user, claims.fhir_user)
        user = await state.users.get(claims.user)
        if user is None or user.disabled:
            raise HttpProblem.unauthenticated("the access token's user is disabled", _INVALID)
        request.state.person = Person(claims.user, claims.fhir_user, claims.teams)
    if claims.client_id != BOARD_CLIENT_ID:  # the built-in board has no row to revoke
        client = await state.clients.get(claims.client_id)
        if client is None or client.revoked:
            raise HttpProblem.unauthenticated(
                "the access token's client is no longer active", _INVALID
            )
    request.state.context = scopes.USER if claims.user is not None else scopes.SYSTEM
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
        needed = scopes.needed(permission, request.state.resource, request.state.context)
        raise HttpProblem.forbidden(f"this needs the scope {needed}")


def person_of(request: Request) -> Person | None:
    """The person an authorized request acts for (None: a client for itself)."""
    person: Person | None = getattr(request.state, "person", None)
    return person
