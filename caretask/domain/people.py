"""People: who signed in, and what their writes record of them (no I/O).

A person's token names a Practitioner (`fhirUser`); a Task that person creates without a
`requester` gets them as requester, and a note they add without an author gets them as
`authorReference`, so that the record says who did what without the app having to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from caretask.domain.references import ID_PATTERN

# a username: short, printable, no spaces or separators that logs and forms would mangle
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@\-]{0,63}")


@dataclass(frozen=True, slots=True)
class Person:
    """The person a request acts for (a token from the authorization code grant)."""

    username: str
    fhir_user: str  # "Practitioner/<id>"
    teams: tuple[str, ...] = ()  # "Group/<id>"

    @property
    def reference(self) -> dict[str, str]:
        return {"reference": self.fhir_user}


def username_problem(name: str) -> str | None:
    if USERNAME.fullmatch(name):
        return None
    return (
        f"'{name[:80]}' is not a username: 1 to 64 letters, digits, '.', '_', '@' or '-', "
        "starting with a letter or digit"
    )


def reference_problem(reference: str, resource: str) -> str | None:
    """What is wrong with a literal reference `<resource>/<id>` (FHIR id syntax)."""
    kind, _, ident = reference.partition("/")
    if kind == resource and ID_PATTERN.fullmatch(ident):
        return None
    return f"'{reference[:80]}' is not a reference {resource}/<id> (an id: A-Z a-z 0-9 - ., 1-64)"


# a redirect URI's host and port as an origin may show them: a name, an IPv4 or a
# bracketed IPv6 address, no user info, and nothing that could end a header's directive
_NETLOC = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def redirect_origin(uri: str) -> str | None:
    """`scheme://host[:port]` of an http(s) redirect URI, or None when its host part is not
    plainly a host (it then goes in no Content-Security-Policy)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not _NETLOC.fullmatch(parts.netloc):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def with_requester(parsed: Any, person: Person | None) -> Any:
    """A new Task's body (parsed JSON, not yet validated) with the person as requester when
    it names none."""
    if person is None or not isinstance(parsed, dict) or "requester" in parsed:
        return parsed
    return {**parsed, "requester": person.reference}


def _has_author(note: dict[str, Any]) -> bool:
    return "authorReference" in note or "authorString" in note


def with_note_authors(
    body: dict[str, Any], previous: dict[str, Any] | None, person: Person | None
) -> dict[str, Any]:
    """The body with the person as the author of each note they add without one.

    A note is the person's new one unless the previous version holds a note without an
    author with the same text (and the same time, if the body gives one): that is the
    stored note sent back. A note re-sent that had been given the person as author gets it
    again, so a retried request does not add it twice (profiles.carry_over compares
    authors)."""
    notes = body.get("note")
    if person is None or not isinstance(notes, list):
        return body
    unauthored = [
        n for n in (previous or {}).get("note", []) if isinstance(n, dict) and not _has_author(n)
    ]

    def stored(note: dict[str, Any]) -> bool:
        return any(
            old.get("text") == note.get("text")
            and ("time" not in note or old.get("time") == note["time"])
            for old in unauthored
        )

    changed = False
    out: list[Any] = []
    for note in notes:
        if isinstance(note, dict) and not _has_author(note) and not stored(note):
            note = {**note, "authorReference": person.reference}
            changed = True
        out.append(note)
    return {**body, "note": out} if changed else body
