"""A task version as an entity tag, `W/"<n>"`: written and read here only, so that the
ETag header, If-Match, If-None-Match and a history entry's etag cannot disagree."""

from __future__ import annotations

from caretask.domain.references import VERSION_FORM, version_number

PATTERN = r'^W/"[0-9]+"$'  # what `etag` writes, as an OpenAPI/JSON Schema pattern
# what `parse_etag` reads (If-Match): weak or strong, quoted or not
READ_PATTERN = f'^(W/)?"?{VERSION_FORM}"?$'


def etag(version: int | str) -> str:
    """The ETag of a version (its number, or the string meta.versionId holds)."""
    return f'W/"{version}"'


def parse_etag(value: str) -> int | None:
    """The version an If-Match names, or None: `W/"3"`, also `"3"` or `3`, which clients
    send for the same version."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    return version_number(text.strip('"'))


def etag_matches(value: str, version: int) -> bool:
    """Whether an If-None-Match names this version: its ETag, weak or strong."""
    tag = etag(version)
    return value.strip() in (tag, tag[2:])
