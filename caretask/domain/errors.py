"""Domain errors. Each carries the FHIR issue code, and has its HTTP status (`status`):
the HTTP edge answers with it, and a Bundle's entries carry it in response.status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue."""

    code: str
    text: str
    expression: str | None = None
    severity: str = "error"
    diagnostics: str | None = None  # detail beyond the fixed text (Canvas's fixed texts)


@dataclass
class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    issues: list[Issue] = field(default_factory=list)

    @classmethod
    def single(cls, code: str, text: str, expression: str | None = None) -> Self:
        return cls([Issue(code, text, expression)])

    def __str__(self) -> str:
        return "; ".join(i.text for i in self.issues)


class InvalidResource(DomainError):
    """The body is not an acceptable Task (400)."""


class TooLarge(DomainError):
    """The body (a request's, or a line of an import) is larger than allowed (413)."""


class InvalidSearch(DomainError):
    """A search parameter is unknown or malformed (400)."""


class InvalidRequest(DomainError):
    """Anything else the client got wrong in an otherwise well-routed request (400)."""


class NotFound(DomainError):
    """The addressed resource or version does not exist (404)."""

    @classmethod
    def task(cls, task_id: str, detail: str) -> NotFound:
        """Canvas's answer for a Task it does not have, with what we know as diagnostics."""
        text = f"Unknown Task resource '{task_id[:64]}'"
        return cls([Issue("not-found", text, diagnostics=detail)])


class Gone(DomainError):
    """The addressed task, or version, was deleted (410)."""

    @classmethod
    def task(cls, task_id: str, version: str) -> Gone:
        text = f"Task '{task_id[:64]}' was deleted (version {version} is its deletion)"
        return cls([Issue("deleted", text)])


class BusinessRule(DomainError):
    """An acceptable Task that the server will not take as it stands (422)."""


class PatchConflict(DomainError):
    """A JSON Patch `test` operation found another value than it names: the patch is a
    compare-and-swap whose compare failed (409, RFC 5789's conflicting state)."""


class Conflict(DomainError):
    """The task's state does not allow what was asked: a claim of a task someone else
    owns (409)."""


class Unprocessable(DomainError):
    """A well-formed patch that cannot be applied to the Task (a path that selects nothing,
    or too much), or whose result is not an acceptable Task (422)."""


class VersionConflict(DomainError):
    """If-Match named a version that is not current, or the task changed after the
    If-Unmodified-Since date (412)."""


class MultipleMatches(DomainError):
    """A conditional interaction's search matched more than one task (412)."""


class Forbidden(DomainError):
    """The caller's token does not grant what a part of its request needs (403): a Bundle
    entry's interaction, or the create a conditional update turns into. Canvas's code and
    text, as the edge's own 403."""

    @classmethod
    def scope(cls, needed: str) -> Forbidden:
        """`needed`: the scope in words (auth.scopes.NEEDS)."""
        return cls.because(f"this needs the scope {needed}")

    @classmethod
    def because(cls, detail: str) -> Forbidden:
        """Canvas's fixed 403, `detail` saying why."""
        return cls([Issue("forbidden", "Authorization failed", diagnostics=detail)])


@dataclass
class SearchTimeout(DomainError):
    """A search ran past the search timeout and was stopped (503): the client may retry
    after `retry_after` seconds, or narrow the search."""

    retry_after: int = 1


_STATUS: dict[type[DomainError], int] = {
    InvalidResource: 400,
    InvalidSearch: 400,
    InvalidRequest: 400,
    Forbidden: 403,
    NotFound: 404,
    Gone: 410,
    BusinessRule: 422,
    Unprocessable: 422,
    PatchConflict: 409,
    Conflict: 409,
    TooLarge: 413,
    VersionConflict: 412,
    MultipleMatches: 412,
    SearchTimeout: 503,
}


def status(error: DomainError) -> int:
    """The HTTP status that answers `error`."""
    return _STATUS.get(type(error), 400)
