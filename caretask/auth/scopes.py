"""SMART on FHIR system scopes, v1 (`system/Task.read`) and v2 (`system/Task.rs`).

A scope string grants a set of permission letters from SMART v2's `cruds` for the Task
resource. Anything malformed grants nothing: `system/Ta*.read` is not a wildcard.
"""

from __future__ import annotations

import re

_SCOPE = re.compile(r"system/(?P<resource>Task|\*)\.(?P<perm>read|write|\*|c?r?u?d?s?)")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}

# what each interaction needs
READ, SEARCH, CREATE, UPDATE, DELETE = "r", "s", "c", "u", "d"
# each permission in the words a refusal uses
NEEDS = {
    READ: "system/Task.read (or system/Task.r)",
    SEARCH: "system/Task.read (or system/Task.s)",
    CREATE: "system/Task.write (or system/Task.c)",
    UPDATE: "system/Task.write (or system/Task.u)",
    DELETE: "system/Task.write (or system/Task.d)",
}


def is_valid_scope(scope: str) -> bool:
    match = _SCOPE.fullmatch(scope)
    return bool(match and match["perm"])


def granted(scopes: str) -> frozenset[str]:
    """The Task permission letters a space-separated scope string grants."""
    letters: set[str] = set()
    for scope in scopes.split():
        match = _SCOPE.fullmatch(scope)
        if match and match["perm"]:
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
    if not granted(requested) <= granted(allowed):
        return None
    return " ".join(dict.fromkeys(requested.split()))
