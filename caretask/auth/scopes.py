"""SMART on FHIR system scopes, v1 (`system/Task.read`) and v2 (`system/Task.rs`), on the
resources this server holds: Task, and the Subscriptions that watch tasks.

A scope string grants, per resource, a set of permission letters from SMART v2's `cruds`.
Anything malformed grants nothing: `system/Ta*.read` is not a wildcard.
"""

from __future__ import annotations

import re

RESOURCES = ("Task", "Subscription")
_SCOPE = re.compile(
    r"system/(?P<resource>Task|Subscription|\*)\.(?P<perm>read|write|\*|c?r?u?d?s?)"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

# what each interaction needs
READ, SEARCH, CREATE, UPDATE, DELETE = "r", "s", "c", "u", "d"
_V1_OF = {READ: "read", SEARCH: "read", CREATE: "write", UPDATE: "write", DELETE: "write"}


def needed(permission: str, resource: str = "Task") -> str:
    """A permission in the words a refusal uses: "system/Task.write (or system/Task.c)"."""
    return f"system/{resource}.{_V1_OF[permission]} (or system/{resource}.{permission})"


# Task's, by letter (what a Bundle entry or a conditional write refuses with)
NEEDS = {letter: needed(letter) for letter in _V1_OF}


def is_valid_scope(scope: str) -> bool:
    match = _SCOPE.fullmatch(scope)
    return bool(match and match["perm"])


def granted(scopes: str, resource: str = "Task") -> frozenset[str]:
    """The permission letters on `resource` a space-separated scope string grants."""
    letters: set[str] = set()
    for scope in scopes.split():
        match = _SCOPE.fullmatch(scope)
        if match and match["perm"] and match["resource"] in (resource, "*"):
            letters.update(_V1.get(match["perm"], match["perm"]))
    return frozenset(letters)


def invalid_scopes(scopes: str) -> list[str]:
    return [s for s in scopes.split() if not is_valid_scope(s)]


def narrow(requested: str | None, allowed: str) -> str | None:
    """The scope to put in a token: the request's scopes if the client holds them all.

    Returns None when the request asks for a permission the client lacks.
    """
    if not requested:
        return allowed
    if invalid_scopes(requested):
        return None
    if any(not granted(requested, r) <= granted(allowed, r) for r in RESOURCES):
        return None
    return " ".join(dict.fromkeys(requested.split()))
