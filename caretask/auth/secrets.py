"""Client secrets: generated with `secrets`, stored only as a slow, salted scrypt hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caretask.storage.base import ClientRecord

# scrypt cost: slow enough per check to make offline guessing expensive, and still cheap
# enough for token issuance, which is rare (a token is reused until it expires).
_N, _R, _P = 2**14, 8, 1
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="


def new_client_id() -> str:
    return "ct_" + secrets.token_hex(12)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _derive(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32
    )


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = _derive(secret, salt, _N, _R, _P)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_client_secret(secret: str, client: ClientRecord | None, now: int) -> bool:
    """A client's secret checked against its current secret, and while the grace period of
    a rotation lasts (`caretask clients rotate`) its previous one. An unknown, revoked or
    public client costs one check, as a wrong secret does."""
    usable = client is not None and not client.revoked and not client.public
    if verify_secret(secret, client.secret_hash if usable and client else None):
        return True
    previous = client.previous_secret_hash if usable and client else None
    until = client.previous_secret_until if client else None
    if previous and until is not None and now < until:
        return verify_secret(secret, previous)
    return False


def verify_secret(secret: str, stored: str | None) -> bool:
    """Constant-time check; an unknown client costs as much as a wrong secret."""
    try:
        _, n, r, p, salt, digest = (stored or _DUMMY).split("$")
        expected = base64.b64decode(digest)
        actual = _derive(secret, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected) and stored is not None
