"""SMART on FHIR scopes, v1 (`system/Task.read`) and v2 (`system/Task.rs`), on the
resources this server holds: Task, and the Subscriptions that watch tasks.

`system/` scopes are a client's acting for itself (client credentials); `user/` scopes a
person's, signed in through an app (authorization code): they grant the same letters, and a
token holds one kind or the other. A scope string grants, per resource, a set of
permission letters from SMART v2's `cruds`. Anything malformed grants nothing:
`system/Ta*.read` is not a wildcard. Scopes that ask for no resource (`openid`,
`fhirUser`, `offline_access`, `online_access`, `launch/patient`...) are accepted in a
person's authorization request and grant nothing here (`offline_access` and
`online_access` ask for a refresh token, and only they are granted: no id token is issued).
"""

from __future__ import annotations

import re
from functools import lru_cache

RESOURCES = ("Task", "Subscription")
_SCOPE = re.compile(
    r"(?P<context>system|user)/(?P<resource>Task|Subscription|\*)"
    r"\.(?P<perm>read|write|\*|c?r?u?d?s?)"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
SYSTEM, USER = "system", "user"
# accepted in a person's request, granting nothing (SMART App Launch's non-resource scopes)
NON_RESOURCE = frozenset(
    {"openid", "fhirUser", "profile", "offline_access", "online_access", "launch",
     "launch/patient", "launch/encounter"}
)  # fmt: skip
REFRESH_SCOPES = frozenset({"offline_access", "online_access"})

# what each interaction needs
READ, SEARCH, CREATE, UPDATE, DELETE = "r", "s", "c", "u", "d"
_V1_OF = {READ: "read", SEARCH: "read", CREATE: "write", UPDATE: "write", DELETE: "write"}
_ORDER = "cruds"


def needed(permission: str, resource: str = "Task", context: str = SYSTEM) -> str:
    """A permission in the words a refusal uses: "system/Task.write (or system/Task.c)"."""
    return f"{context}/{resource}.{_V1_OF[permission]} (or {context}/{resource}.{permission})"


# Task's, by letter (what a Bundle entry or a conditional write refuses with)
NEEDS = {letter: needed(letter) for letter in _V1_OF}
USER_NEEDS = {letter: needed(letter, context=USER) for letter in _V1_OF}


def needs_for(person: object | None) -> dict[str, str]:
    """The refusals' words for a caller: user/ scopes for a person, else system/ ones."""
    return USER_NEEDS if person is not None else NEEDS


def is_valid_scope(scope: str, context: str = SYSTEM) -> bool:
    match = _SCOPE.fullmatch(scope)
    return bool(match and match["perm"] and match["context"] == context)


@lru_cache(maxsize=1024)  # a token's scopes are read on every request it makes
def granted(scopes: str, resource: str = "Task") -> frozenset[str]:
    """The permission letters on `resource` a space-separated scope string grants."""
    letters: set[str] = set()
    for scope in scopes.split():
        match = _SCOPE.fullmatch(scope)
        if match and match["perm"] and match["resource"] in (resource, "*"):
            letters.update(_V1.get(match["perm"], match["perm"]))
    return frozenset(letters)


def invalid_scopes(scopes: str, context: str = SYSTEM) -> list[str]:
    """The scopes that are not `context/` resource scopes (nor, for a person's, the
    non-resource ones)."""
    return [
        s
        for s in scopes.split()
        if not is_valid_scope(s, context) and not (context == USER and s in NON_RESOURCE)
    ]


def narrow(requested: str | None, allowed: str) -> str | None:
    """The scope to put in a client's token: the request's scopes if the client holds them
    all.

    Returns None when the request asks for a permission the client lacks.
    """
    if not requested:
        return allowed
    if invalid_scopes(requested):
        return None
    if any(not granted(requested, r) <= granted(allowed, r) for r in RESOURCES):
        return None
    return " ".join(dict.fromkeys(requested.split()))


def _letters(letters: frozenset[str] | set[str]) -> str:
    return "".join(c for c in _ORDER if c in letters)


def intersect(requested: str | None, allowed: str) -> str | None:
    """The scope of a person's token: what the app asked for (`requested`; none: all the
    client may have) as far as the client may have it (`allowed`). A resource scope the
    client holds only in part becomes the v2 scope of the part it holds; one it holds
    none of is left out; of the non-resource scopes, those asking for a refresh token are
    kept. None if a scope is malformed or not
    a person's (`system/`, `patient/`): the request is refused (invalid_scope)."""
    if not requested:
        requested = allowed
    if invalid_scopes(requested, USER):
        return None
    out: list[str] = []
    for scope in dict.fromkeys(requested.split()):
        match = _SCOPE.fullmatch(scope)
        if match is None:
            # non-resource: granted only if honoured (no id token is issued, so `openid`
            # and `fhirUser` are not granted, and an OpenID client sees it in the scope)
            if scope in REFRESH_SCOPES:
                out.append(scope)
            continue
        resources = RESOURCES if match["resource"] == "*" else (match["resource"],)
        asked = set(_V1.get(match["perm"], match["perm"]))
        for resource in resources:
            held = asked & granted(allowed, resource)
            if held == asked and len(resources) == 1:
                out.append(scope)
            elif held:
                out.append(f"{USER}/{resource}.{_letters(held)}")
    return " ".join(dict.fromkeys(out))
