"""POST /auth/token/: OAuth 2.0 client credentials, and a person's authorization code
(PKCE) and refresh token grants (http.sign_in issues the codes), with RFC 6749 section 5.2
errors.

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
import hmac
import logging
import math
import re
import secrets as py_secrets
import time
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from caretask.auth import scopes, secrets, tokens
from caretask.auth.clients import BOARD_CLIENT_ID
from caretask.auth.throttle import Busy
from caretask.http import sign_in
from caretask.http.negotiation import FORM, media_type, read_body
from caretask.http.state import opened, settings
from caretask.http.urls import base_url
from caretask.storage.base import Grant

log = logging.getLogger("caretask.auth")

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
    if grant == "authorization_code":
        return await _code_grant(request, form)
    if grant == "refresh_token":
        return await _refresh_grant(request, form)
    if grant != "client_credentials":
        return _error(
            400,
            "unsupported_grant_type",
            "supported: client_credentials, authorization_code, refresh_token",
        )
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
        verified = await state.hash_pool.run(
            secrets.verify_client_secret, secret[:1000], client, int(time.time())
        )
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


# --- a person's grants ----------------------------------------------------------------------

_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1
_BAD_CODE = "the code is invalid, expired, used, or not this client's and redirect URI's"
_BAD_REFRESH = "the refresh token is invalid, expired, revoked or used"


def _fields(form: dict[str, str], *names: str) -> list[str] | Response:
    values = [form.get(name, "") for name in names]
    for name, value in zip(names, values, strict=True):
        if not value:
            return _error(400, "invalid_request", f"{name} is required")
        if len(value) > 2048 or not value.isprintable():
            return _error(400, "invalid_request", f"{name} is malformed")
    return values


async def _code_grant(request: Request, form: dict[str, str]) -> Response:
    """authorization_code: the code sign_in gave, by the app it gave it to, with the PKCE
    verifier of its challenge. A code is taken once, whatever follows: a code used twice
    revokes the refresh tokens the first use gave (RFC 6749 10.5)."""
    fields = _fields(form, "code", "redirect_uri", "client_id", "code_verifier")
    if isinstance(fields, Response):
        return fields
    code, redirect_uri, client_id, verifier = fields
    request.state.client_id = client_id  # claimed: the audit trail's "who"
    state = opened(request)
    redeemed = await state.storage.redeem_code(sign_in.digest(code), int(time.time()))
    grant = redeemed.grant
    if redeemed.reused:
        log.warning("an authorization code was used twice: its refresh tokens are revoked")
    if (
        grant is None
        or grant.client_id != client_id
        or grant.redirect_uri != redirect_uri
        or not _VERIFIER.fullmatch(verifier)
        or not hmac.compare_digest(sign_in.s256(verifier), grant.code_challenge)
    ):
        return _error(400, "invalid_grant", _BAD_CODE)
    return await _person_tokens(request, grant)


async def _refresh_grant(request: Request, form: dict[str, str]) -> Response:
    """refresh_token: each use gives a new refresh token and ends the old one; an old one
    used again revokes its whole family (it was copied: RFC 9700 4.14.2)."""
    fields = _fields(form, "refresh_token", "client_id")
    if isinstance(fields, Response):
        return fields
    token, client_id = fields
    request.state.client_id = client_id
    state = opened(request)
    now = int(time.time())
    fresh = py_secrets.token_urlsafe(32)
    ttl = settings(request).refresh_token_ttl
    redeemed = await state.storage.rotate_refresh(
        sign_in.digest(token), sign_in.digest(fresh), now, now + ttl, client_id
    )
    if redeemed.reused:
        log.warning("a refresh token was used twice: its family is revoked")
    grant = redeemed.grant
    if grant is None or grant.client_id != client_id:
        return _error(400, "invalid_grant", _BAD_REFRESH)
    return await _person_tokens(request, grant, fresh)


async def _person_tokens(request: Request, grant: Grant, refresh: str | None = None) -> Response:
    """The token response for a person's grant, once its user and client are still good:
    an access token naming them, and a refresh token (`refresh`, a rotated one's successor
    already stored; else a new family's first, if the grant asks for one)."""
    state = opened(request)
    user = await state.storage.get_user(grant.username)
    client = await sign_in.find_client(state, grant.client_id, base_url(request))
    if user is None or user.disabled or client is None:
        return _error(400, "invalid_grant", "the user or the app may no longer sign in")
    request.state.audit_user = (user.username, user.fhir_user)
    config = settings(request)
    access = tokens.issue_person(
        state.signing_key,
        grant.client_id,
        grant.scope,
        config.token_ttl,
        user.username,
        user.fhir_user,
        user.teams,
    )
    body: dict[str, object] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": config.token_ttl,
        "scope": grant.scope,
        "fhirUser": user.fhir_user,
        "username": user.username,
        "teams": list(user.teams),
    }
    wants_refresh = client.client_id == BOARD_CLIENT_ID or bool(
        scopes.REFRESH_SCOPES & set(grant.scope.split())
    )
    if refresh is None and wants_refresh:
        refresh = py_secrets.token_urlsafe(32)
        expires = int(time.time()) + config.refresh_token_ttl
        await state.storage.save_refresh(sign_in.digest(refresh), grant, expires)
    if refresh is not None:
        body["refresh_token"] = refresh
    return _oauth(200, body)
