"""Parsing FHIR literal references (`Type/id`, absolute URLs, `_history` suffixes) and
the version numbers that `_history/<vid>` and ETags carry."""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
TYPE_PATTERN = re.compile(r"[A-Z][A-Za-z]{1,63}")
# ASCII digits only: str.isdigit() is true of Arabic-Indic '1' (int() reads it) and of '²' (int()
# raises), and a version number under 10 digits fits a 32-bit column
VERSION_FORM = "[0-9]{1,9}"  # a version number as a URL segment or in an ETag
_VERSION = re.compile(VERSION_FORM)
_REFERENCE = re.compile(
    r"(?:https?://[^\s/]+(?:/[^\s]*)?/)?"
    rf"(?P<type>{TYPE_PATTERN.pattern})/(?P<id>{ID_PATTERN.pattern})"
    rf"(?:/_history/{ID_PATTERN.pattern})?"
)


def split_reference(reference: str) -> tuple[str, str] | None:
    """Return (type, id) of a literal reference, or None when it is not one."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        return None
    return match["type"], match["id"]


def version_number(text: str) -> int | None:
    """The version a `_history/<vid>` segment or an ETag's digits name, or None."""
    return int(text) if _VERSION.fullmatch(text) else None
