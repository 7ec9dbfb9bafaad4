"""Parsing FHIR literal references (`Type/id`, absolute URLs, `_history` suffixes)."""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REFERENCE = re.compile(
    r"(?:https?://[^\s/]+(?:/[^\s]*)?/)?"
    r"(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)


def split_reference(reference: str) -> tuple[str, str] | None:
    """Return (type, id) of a literal reference, or None when it is not one."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        return None
    return match["type"], match["id"]
