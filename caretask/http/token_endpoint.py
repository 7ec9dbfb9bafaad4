"""POST /auth/token/: OAuth 2.0 client credentials with RFC 6749 section 5.2 errors.

A secret check costs tens of milliseconds of scrypt, so checks are bounded (auth.throttle),
each refusal a 429 or 503 with Retry-After, answered before any hashing:
- per peer address, CARETASK_TOKEN_FAILURES_PER_ADDRESS checks per
  CARETASK_TOKEN_FAILURE_WINDOW seconds, counted when a check starts and given back when it
  succeeds or never runs, so that concurrent guesses from one address cannot all be hashed;
- per client id and peer address, CARETASK_TOKEN_FAILURES_PER_CLIENT failures per window;
- per process, CARETASK_TOKEN_HASH_THREADS checks at once and CARETASK_TOKEN_HASH_QUEUE
  waiting, so that a flood from many addresses cannot queue unbounded work (503).
There is deliberately no limit per client id alone: client ids are public (every token's
`sub`), so it would let anyone lock a client out, and it protects nothing, since a secret
is 256 random bits that no online guessing rate can find.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from caretask.auth import scopes, secrets, tokens
from caretask.auth.throttle import Busy
from caretask.http.negotiation import FORM, media_type, read_body
from caretask.http.state import opened, settings

# a token request is a few short fields: anything larger is refused before it is parsed
MAX_FORM_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth(status: int, body: dict[str, object], extra: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**_NO_STORE, **(extra or {})},
    )


def _error(
    status: int,
    error: str,
    description: str,
    basic: bool = False,
    extra: dict[str, str] | None = None,
) -> Response:
    headers = dict(extra or {})
    if basic and status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="caretask"'
    return _oauth(status, {"error": error, "error_description": description}, headers)


def _retry_later(status: int, description: str, wait: float) -> Response:
    retry = {"Retry-After": str(max(1, math.ceil(wait)))}
    return _error(status, "temporarily_unavailable", description, extra=retry)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, secret = decoded.partition(":")
    return unquote(client_id), unquote(secret)


async def token(request: Request) -> Response:
    if media_type(request) != FORM:
        return _error(400, "invalid_request", f"the body must be {FORM}")
    raw = await read_body(request, MAX_FORM_BYTES)
    try:
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        return _error(400, "invalid_request", "the form body could not be parsed")
    grant = form.get("grant_type")
    if not grant:
        return _error(400, "invalid_request", "grant_type is required")
    if grant != "client_credentials":
        return _error(400, "unsupported_grant_type", "only client_credentials is supported")
    basic = _basic_credentials(request)
    client_id, secret = (
        basic if basic else (form.get("client_id", ""), form.get("client_secret", ""))
    )
    if not client_id or not secret:
        return _error(401, "invalid_client", "client authentication failed", basic is not None)
    client_id = client_id[:200]
    if not client_id.isprintable():  # a NUL broke PostgreSQL's lookup (a 500); no id has one
        request.state.client_id = client_id
        return _error(401, "invalid_client", "client authentication failed", basic is not None)
    request.state.client_id = client_id  # claimed, not proven: the audit trail's "who"
    state = opened(request)
    address = request.client.host if request.client else "unknown"
    pair = f"{address} {client_id}"
    now = time.monotonic()
    wait = state.failed_pairs.retry_after(pair, now)
    if wait is None:
        wait = state.address_checks.spend(address, now)
    if wait is not None:  # refused before the (slow) secret check: guessing gains nothing
        return _retry_later(429, "too many failed attempts; retry later", wait)
    storage = state.storage
    verified: bool | None = None  # None: the secret was never checked
    try:
        client = await storage.get_client(client_id)
        stored = client.secret_hash if client and not client.revoked else None
        verified = await state.hash_pool.run(secrets.verify_secret, secret[:1000], stored)
    except Busy:
        return _retry_later(503, "too many token requests at once; retry later", 1)
    finally:
        # a check that never ran (Busy, the database away) guessed nothing: given back,
        # or a client retrying through a blip would lock its whole address out
        if verified is None:
            state.address_checks.refund(address, time.monotonic())
    now = time.monotonic()
    if not verified:
        state.failed_pairs.record(pair, now)
        return _error(401, "invalid_client", "client authentication failed", basic is not None)
    assert client is not None
    state.address_checks.refund(address, now)
    state.failed_pairs.clear(pair)
    scope = scopes.narrow(form.get("scope"), client.scope)
    if scope is None:
        return _error(400, "invalid_scope", "the requested scope exceeds what the client holds")
    ttl = settings(request).token_ttl
    access = tokens.issue(state.signing_key, client.client_id, scope, ttl)
    return _oauth(
        200, {"access_token": access, "token_type": "Bearer", "expires_in": ttl, "scope": scope}
    )
