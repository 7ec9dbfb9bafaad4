"""Users, public clients' columns, authorization codes and refresh tokens in SQL, shared
by both engines (migration 0009).

What takes several statements in one transaction (taking a code once, rotating a refresh
token) is written once as a program: a generator that yields each statement (`Run`) and
is sent its rows and row count; each engine drives it inside one transaction of its own
(SQLite on its writer thread, PostgreSQL on a pooled connection), as Storage.transact's
write programs are driven.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from caretask.storage.base import ClientRecord, Grant, Redeemed, UserRecord
from caretask.storage.dialect import Dialect

T = TypeVar("T")

# a used code is kept this long after it expired, so that its reuse is still recognised
# (and its family revoked); refresh tokens a day past expiry
CODE_KEPT_SECONDS = 3600
REFRESH_KEPT_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class Run:
    """-> (rows, rowcount): one statement of a program."""

    sql: str
    params: tuple[Any, ...]


Program = Generator[Run, tuple[list[Any], int], T]


@dataclass(frozen=True, slots=True)
class PeopleStatements:
    insert_user: str
    get_user: str
    list_users: str
    disable_user: str
    set_password: str
    revoke_sessions: str
    insert_client: str
    get_client: str
    list_clients: str
    rotate_secret: str
    insert_code: str
    purge_codes: str
    code: str
    use_code: str
    insert_refresh: str
    purge_refresh: str
    refresh: str
    use_refresh: str
    revoke_family: str


_USER = "username, fhir_user, teams, password_hash, disabled_at"
_GRANT = "client_id, username, scope, family"
_CLIENT = (
    "client_id, name, secret_hash, scope, revoked_at, public, redirect_uris, "
    "previous_secret_hash, previous_secret_until, created_at"
)


@cache
def people_statements(d: Dialect) -> PeopleStatements:
    q = d.sql
    return PeopleStatements(
        insert_user=q(
            "INSERT INTO users (username, fhir_user, teams, password_hash, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (username) DO NOTHING"
        ),
        get_user=q(f"SELECT {_USER} FROM users WHERE username = ?"),
        list_users=q(f"SELECT {_USER} FROM users ORDER BY username"),
        disable_user=q(
            "UPDATE users SET disabled_at = ? WHERE username = ? AND disabled_at IS NULL"
        ),
        set_password=q("UPDATE users SET password_hash = ? WHERE username = ?"),
        revoke_sessions=q(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL"
        ),
        insert_client=q(
            "INSERT INTO clients (client_id, name, secret_hash, scope, created_at, public, "
            "redirect_uris) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ),
        get_client=q(f"SELECT {_CLIENT} FROM clients WHERE client_id = ?"),
        list_clients=f"SELECT {_CLIENT} FROM clients ORDER BY created_at, client_id",
        rotate_secret=q(
            "UPDATE clients SET previous_secret_hash = secret_hash, previous_secret_until = ?, "
            "secret_hash = ? WHERE client_id = ? AND revoked_at IS NULL AND NOT public"
        ),
        insert_code=q(
            f"INSERT INTO auth_codes (code_hash, {_GRANT}, redirect_uri, code_challenge, "
            "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        purge_codes=q("DELETE FROM auth_codes WHERE expires_at < ?"),
        code=q(
            f"SELECT {_GRANT}, redirect_uri, code_challenge, expires_at, used_at "
            f"FROM auth_codes WHERE code_hash = ?{d.lock_row}"
        ),
        use_code=q("UPDATE auth_codes SET used_at = ? WHERE code_hash = ?"),
        insert_refresh=q(
            f"INSERT INTO refresh_tokens (token_hash, {_GRANT}, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        ),
        purge_refresh=q("DELETE FROM refresh_tokens WHERE expires_at < ?"),
        refresh=q(
            f"SELECT {_GRANT}, expires_at, used_at, revoked_at "
            f"FROM refresh_tokens WHERE token_hash = ?{d.lock_row}"
        ),
        use_refresh=q("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?"),
        revoke_family=q(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL"
        ),
    )


def user_row(row: Sequence[Any]) -> UserRecord:
    teams = tuple(t for t in row[2].split("\n") if t)
    return UserRecord(row[0], row[1], teams, row[3], disabled=row[4] is not None)


def user_params(record: UserRecord, now: int) -> tuple[Any, ...]:
    return (record.username, record.fhir_user, "\n".join(record.teams), record.password_hash, now)


def client_row(row: Sequence[Any]) -> ClientRecord:
    uris = tuple(u for u in (row[6] or "").split("\n") if u)
    return ClientRecord(
        row[0], row[1], row[2], row[3], revoked=row[4] is not None, public=bool(row[5]),
        redirect_uris=uris, previous_secret_hash=row[7], previous_secret_until=row[8],
        created_at=row[9],
    )  # fmt: skip


def client_params(record: ClientRecord, now: int) -> tuple[Any, ...]:
    return (
        record.client_id,
        record.name,
        record.secret_hash,
        record.scope,
        now,
        record.public,
        "\n".join(record.redirect_uris),
    )


def new_password(s: PeopleStatements, username: str, password_hash: str, now: int) -> Program[bool]:
    """A user's new password; every session signed in with the old one ends (its refresh
    tokens revoked: the password may have been changed because it leaked). Whether the
    user exists."""
    _, changed = yield Run(s.set_password, (password_hash, username))
    if changed:
        yield Run(s.revoke_sessions, (now, username))
    return changed > 0


def save_code(
    s: PeopleStatements, code_hash: str, grant: Grant, expires_at: int, now: int
) -> Program[None]:
    yield Run(s.purge_codes, (now - CODE_KEPT_SECONDS,))
    yield Run(
        s.insert_code,
        (
            code_hash,
            grant.client_id,
            grant.username,
            grant.scope,
            grant.family,
            grant.redirect_uri,
            grant.code_challenge,
            expires_at,
        ),
    )


def redeem_code(s: PeopleStatements, code_hash: str, now: int) -> Program[Redeemed]:
    rows, _ = yield Run(s.code, (code_hash,))
    if not rows:
        return Redeemed(None)
    client_id, username, scope, family, redirect_uri, challenge, expires_at, used_at = rows[0]
    if used_at is not None:  # RFC 6749 10.5: what it gave may be an attacker's now
        yield Run(s.revoke_family, (now, family))
        return Redeemed(None, reused=True)
    yield Run(s.use_code, (now, code_hash))
    if expires_at <= now:
        return Redeemed(None)
    return Redeemed(Grant(client_id, username, scope, family, redirect_uri, challenge))


def save_refresh(
    s: PeopleStatements, token_hash: str, grant: Grant, expires_at: int, now: int
) -> Program[None]:
    yield Run(s.purge_refresh, (now - REFRESH_KEPT_SECONDS,))
    yield Run(s.insert_refresh, _refresh_params(token_hash, grant, expires_at))


def _refresh_params(token_hash: str, grant: Grant, expires_at: int) -> tuple[Any, ...]:
    return (token_hash, grant.client_id, grant.username, grant.scope, grant.family, expires_at)


def rotate_refresh(
    s: PeopleStatements,
    token_hash: str,
    new_hash: str,
    now: int,
    expires_at: int,
    presented_by: str,
) -> Program[Redeemed]:
    rows, _ = yield Run(s.refresh, (token_hash,))
    if not rows:
        return Redeemed(None)
    client_id, username, scope, family, old_expiry, used_at, revoked_at = rows[0]
    if client_id != presented_by:  # not this client's to use (nor to use up)
        return Redeemed(None)
    if revoked_at is not None:
        return Redeemed(None)
    if used_at is not None:  # a rotated token again: stolen, or the app's copy was; either way
        yield Run(s.revoke_family, (now, family))
        return Redeemed(None, reused=True)
    if old_expiry <= now:
        return Redeemed(None)
    grant = Grant(client_id, username, scope, family)
    yield Run(s.use_refresh, (now, token_hash))
    yield Run(s.insert_refresh, _refresh_params(new_hash, grant, expires_at))
    return Redeemed(grant)
