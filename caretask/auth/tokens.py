"""Signed, expiring access tokens (JWT, HS256) verified without a database round trip.

The signing key lives in the database, so every server sharing it accepts the same
tokens across restarts; revocation is checked against the client's row. The claims are
those of RFC 9068 (JWT access tokens): `client_id` and `sub` both name the client, which
acts for itself in the client-credentials grant; clients such as Medplum's refuse a token
without `client_id`. A person's token (the authorization code grant) names the person in
`sub` (their username) and the app in `client_id`, with SMART's `fhirUser` (their
Practitioner) and `teams` (their Groups).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

ISSUER = "caretask"
AUDIENCE = "caretask-fhir"
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Claims:
    client_id: str
    scope: str
    expires_at: int
    # a person's token (authorization code grant): who signed in, and as which FHIR
    # resource ("Practitioner/<id>"); None for a client acting for itself
    user: str | None = None
    fhir_user: str | None = None
    teams: tuple[str, ...] = ()  # "Group/<id>" references of the person's care teams


class InvalidToken(Exception):
    """The token is malformed, forged, expired or not ours."""


def issue(key: bytes, client_id: str, scope: str, ttl: int) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": client_id,
        "client_id": client_id,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def issue_person(
    key: bytes,
    client_id: str,
    scope: str,
    ttl: int,
    username: str,
    fhir_user: str,
    teams: tuple[str, ...],
) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": username,
        "client_id": client_id,
        "fhirUser": fhir_user,
        "teams": list(teams),
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def _decode(key: bytes, token: str, audience: str) -> dict[str, Any]:
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError as error:
        raise InvalidToken(str(error)) from None
    return payload


def verify(key: bytes, token: str) -> Claims:
    payload = _decode(key, token, AUDIENCE)
    scope, sub = payload.get("scope"), payload.get("sub")
    if not isinstance(scope, str) or not isinstance(sub, str):
        raise InvalidToken("missing claims")
    expires_at = int(payload["exp"])
    fhir_user = payload.get("fhirUser")
    if fhir_user is not None:  # a person's: sub is the person, client_id the app
        client_id, teams = payload.get("client_id"), payload.get("teams", [])
        if (
            not isinstance(fhir_user, str)
            or not isinstance(client_id, str)
            or not isinstance(teams, list)
            or not all(isinstance(t, str) for t in teams)
        ):
            raise InvalidToken("malformed person claims")
        return Claims(client_id, scope, expires_at, sub, fhir_user, tuple(teams))
    # tokens issued before `client_id` was added stay valid until they expire: the claim
    # is optional here, but when present it must name the same client as `sub`
    client_id = payload.get("client_id", sub)
    if client_id != sub:
        raise InvalidToken("client_id and sub differ")
    return Claims(client_id=sub, scope=scope, expires_at=expires_at)


class VerifiedTokens:
    """Tokens this process has verified, with their claims. A token's signature and claims
    give the same answer every time under one key, and PyJWT's decode was a visible share
    of a read's CPU in profiles, so each token is decoded once; expiry is checked on
    every use. Only valid tokens are kept, at most `size` of them (oldest dropped first)."""

    def __init__(self, key: bytes, size: int = 10_000) -> None:
        self._key = key
        self._size = size
        self._known: dict[str, Claims] = {}

    def verify(self, token: str) -> Claims:
        claims = self._known.get(token)
        if claims is None:
            claims = verify(self._key, token)
            if len(self._known) >= self._size:
                del self._known[next(iter(self._known))]
            self._known[token] = claims
        if claims.expires_at <= time.time():
            del self._known[token]
            raise InvalidToken("the token has expired")
        return claims


# --- websocket binding tokens (the Subscriptions Backport IG's $get-ws-binding-token) -----

BINDING_AUDIENCE = "caretask-ws-binding"  # never accepted as an access token, nor one as it


def issue_binding(key: bytes, client_id: str, subscription_ids: list[str], ttl: int) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": BINDING_AUDIENCE,
        "sub": client_id,
        "subscriptions": subscription_ids,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def verify_binding(key: bytes, token: str) -> tuple[str, list[str]]:
    """(client id, subscription ids) of a binding token, or InvalidToken."""
    payload = _decode(key, token, BINDING_AUDIENCE)
    ids = payload.get("subscriptions")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidToken("missing claims")
    return str(payload["sub"]), ids
