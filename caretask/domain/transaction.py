"""Batch and transaction Bundles (FHIR R4 http.html#transaction): reading a Bundle's
entries into requests, the order a transaction processes them in, the resolution of the
`urn:uuid:` fullUrls its entries reference, and the response Bundle. Plain functions, no
I/O: the service (service.bundles) runs the entries.

An entry is read into an `Entry` (an interaction on Task, as its request says) or, when
its request cannot be read, into a `Refused` that carries the error it is answered with:
in a batch that entry's answer, in a transaction the whole Bundle's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

from caretask.domain.errors import (
    DomainError,
    InvalidRequest,
    InvalidResource,
    Issue,
    TooLarge,
)
from caretask.domain.outcome import operation_outcome
from caretask.domain.references import ID_PATTERN

BATCH, TRANSACTION = "batch", "transaction"
KINDS = (BATCH, TRANSACTION)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# FHIR's processing order for a transaction's entries: deletes, creates, updates, reads
RANK = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3}
URN_UUID = re.compile(r"urn:uuid:[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# a request URL shown in an issue: enough to find the entry, not a whole search
_SHOWN_URL = 120


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry's request, read. `interaction` is FHIR's name for it (create, update,
    patch, delete, read, vread, history-instance, search-type); `search` the query of a
    search, or the condition of a conditional update, patch or delete."""

    index: int
    method: str
    url: str
    interaction: str
    task_id: str | None = None
    version: str | None = None
    search: str | None = None
    full_url: str | None = None
    resource: Any = None
    if_match: str | None = None
    if_none_exist: str | None = None
    if_none_match: str | None = None

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    @property
    def condition(self) -> str | None:
        """The search that decides which task a conditional write writes (If-None-Exist,
        PUT Task?...); a GET's search is no condition."""
        if self.method == "POST":
            return self.if_none_exist
        return self.search if self.writes else None


@dataclass(frozen=True, slots=True)
class Refused:
    """An entry whose request could not be read, and why."""

    index: int
    method: str
    url: str
    error: DomainError


@dataclass(frozen=True, slots=True)
class BundleRequest:
    kind: str  # BATCH or TRANSACTION
    entries: list[Entry | Refused]


def _invalid(text: str, expression: str) -> InvalidRequest:
    return InvalidRequest.single("invalid", text, expression)


def read_bundle(parsed: Any, max_entries: int, base: str) -> BundleRequest:
    """A parsed request body as a batch or transaction. The Bundle itself wrong (not a
    Bundle, another type, entry not an array) is an InvalidRequest; more than
    `max_entries` entries TooLarge (413); an entry wrong is Refused in its place. `base` is
    this server's base URL: an entry's absolute URL must be under it."""
    if not isinstance(parsed, dict):
        raise InvalidRequest.single("structure", "the body must be a JSON object", "Bundle")
    if parsed.get("resourceType") != "Bundle":
        raise InvalidResource.single(
            "invalid", "POST / takes a Bundle: resourceType must be 'Bundle'", "Bundle.resourceType"
        )
    kind = parsed.get("type")
    if kind not in KINDS:
        shown = kind[:40] if isinstance(kind, str) else kind if kind is None else "not a code"
        raise _invalid(
            f"POST / processes a Bundle of type batch or transaction, not {shown}", "Bundle.type"
        )
    entries = parsed.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidResource.single("structure", "Bundle.entry must be an array", "Bundle.entry")
    if len(entries) > max_entries:
        raise TooLarge.single(
            "too-costly",
            f"the Bundle has {len(entries)} entries; this server takes at most {max_entries} "
            "in one Bundle (CARETASK_MAX_BUNDLE_ENTRIES): split it",
            "Bundle.entry",
        )
    read: list[Entry | Refused] = []
    for index, raw in enumerate(entries):
        try:
            read.append(_entry(index, raw, base))
        except DomainError as error:
            method, url = _request_line(raw)
            read.append(Refused(index, method, url, error))
    if kind == TRANSACTION:
        _check_full_urls(read)
    return BundleRequest(kind, read)


def _request_line(raw: Any) -> tuple[str, str]:
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict):
        return "-", "-"
    method, url = request.get("method"), request.get("url")
    return (
        method[:8] if isinstance(method, str) else "-",
        url[:_SHOWN_URL] if isinstance(url, str) else "-",
    )


def _string(value: Any, expression: str) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise _invalid("must be a non-empty string", expression)


def _entry(index: int, raw: Any, base: str) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequest.single("structure", "an entry must be a JSON object", where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise _invalid("an entry of a batch or transaction needs a request", f"{where}.request")
    method = request.get("method")
    if method not in METHODS:
        raise _invalid(
            "request.method must be one of " + ", ".join(METHODS), f"{where}.request.method"
        )
    url = _string(request.get("url"), f"{where}.request.url")
    if url is None:
        raise _invalid("request.url is required", f"{where}.request.url")
    full_url = _string(raw.get("fullUrl"), f"{where}.fullUrl")
    headers = {
        name: _string(request.get(name), f"{where}.request.{name}")
        for name in ("ifMatch", "ifNoneExist", "ifNoneMatch")
    }
    interaction, task_id, version, search = _target(method, _relative(url, base, where), where)
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if resource is None:
            raise _invalid(f"a {method} entry needs the Task as its resource", f"{where}.resource")
    elif resource is not None and method != "PATCH":  # PATCH: the patch (a Parameters)
        raise _invalid(f"a {method} entry has no resource", f"{where}.resource")
    if headers["ifNoneExist"] is not None and method != "POST":
        raise _invalid("ifNoneExist is for a create (POST)", f"{where}.request.ifNoneExist")
    if headers["ifMatch"] is not None and method not in ("PUT", "PATCH", "DELETE"):
        raise _invalid("ifMatch is for an update, patch or delete", f"{where}.request.ifMatch")
    return Entry(
        index,
        method,
        url,
        interaction,
        task_id,
        version,
        search,
        full_url,
        resource,
        headers["ifMatch"],
        headers["ifNoneExist"],
        headers["ifNoneMatch"],
    )


def _relative(url: str, base: str, where: str) -> str:
    """An entry's URL relative to this server's base: `Task...` as FHIR writes them, or an
    absolute URL under `base`; anything else (another server's URL, a urn) is refused."""
    if "://" in url or url.startswith("urn:"):
        prefix = base.rstrip("/") + "/"
        if not url.startswith(prefix):
            raise _invalid(
                f"request.url must be relative (Task/...) or on this server ({prefix}...)",
                f"{where}.request.url",
            )
        url = url[len(prefix) :]
    return url.lstrip("/")


def _target(method: str, url: str, where: str) -> tuple[str, str | None, str | None, str | None]:
    """(interaction, task id, version, search) of a method on a relative URL."""
    path, mark, query = url.partition("?")
    segments = path.split("/")
    bad = _invalid(
        f"{method} {url[:_SHOWN_URL]} is not an interaction on Task this server takes in a "
        "Bundle (Task, Task?<search>, Task/<id>, Task/<id>/_history[/<vid>])",
        f"{where}.request.url",
    )
    if segments[0] != "Task" or any(s in ("", ".", "..") for s in segments[1:]):
        raise bad
    search = query if mark else None
    if len(segments) == 1:
        if method == "GET":
            return "search-type", None, None, query
        if method == "POST":
            if search is not None:
                raise bad
            return "create", None, None, None
        if search is None or not search.strip():
            raise _invalid(
                f"{method} Task needs a search (Task?identifier=...) or an id (Task/<id>)",
                f"{where}.request.url",
            )
        return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method], None, None, search
    task_id = segments[1]
    if not ID_PATTERN.fullmatch(task_id) or (search is not None and method != "GET"):
        raise bad
    if len(segments) == 2:
        interaction = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        if method not in interaction:
            raise bad
        return interaction[method], task_id, None, search
    if method != "GET" or segments[2] != "_history" or len(segments) > 4:
        raise bad
    if len(segments) == 3:
        return "history-instance", task_id, None, query
    return "vread", task_id, segments[3], search


def _check_full_urls(entries: list[Entry | Refused]) -> None:
    """A transaction's fullUrls name one entry each: a reference to one that two entries
    carry could not be resolved."""
    seen: set[str] = set()
    for entry in entries:
        if isinstance(entry, Entry) and entry.full_url is not None:
            if entry.full_url in seen:
                raise _invalid(
                    "two entries have this fullUrl: each entry's must be its own",
                    f"Bundle.entry[{entry.index}].fullUrl",
                )
            seen.add(entry.full_url)


def processing_order(entries: Iterable[Entry]) -> list[Entry]:
    """A transaction's entries in FHIR's processing order: DELETE, POST, PUT and PATCH,
    then GET; in request order within each."""
    return sorted(entries, key=lambda e: (RANK[e.method], e.index))


def placeholder(entry: Entry) -> str | None:
    """The `urn:uuid:` fullUrl of a transaction's entry that may make a task (a create, a
    conditional update), which other entries' references to it are resolved to."""
    url = entry.full_url
    if url is None or not URN_UUID.fullmatch(url):
        return None
    makes = entry.interaction == "create" or (entry.interaction == "update" and entry.search)
    return url if makes else None


def urn_references(value: Any) -> set[str]:
    """Every Reference.reference in `value` that is a `urn:uuid:` (another entry's
    fullUrl, if it is to resolve)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref.startswith("urn:uuid:"):
                found.add(ref)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def unresolvable(urns: set[str], placeholders: Mapping[str, str], where: str) -> None:
    """A reference to a `urn:uuid:` that no entry of the Bundle creates (in a batch, any:
    its entries are independent) would be stored as a dangling URN: a 400."""
    missing = sorted(urns - placeholders.keys())
    if missing:
        raise _invalid(
            f"the reference {missing[0][:60]} is not the fullUrl of an entry of this "
            "transaction that creates a Task (a batch's entries cannot reference each other)",
            f"{where}.resource",
        )


def resolve(value: Any, ids: Mapping[str, str]) -> Any:
    """`value` with every Reference.reference that is a key of `ids` (a fullUrl) replaced
    by `Task/<id>`, the id assigned to that entry's task; copied only where it changes."""
    if isinstance(value, dict):
        out = {k: resolve(v, ids) for k, v in value.items()}
        ref = value.get("reference")
        if isinstance(ref, str) and ref in ids:
            out["reference"] = f"Task/{ids[ref]}"
        return out
    if isinstance(value, list):
        return [resolve(item, ids) for item in value]
    return value


def at_entry(error: DomainError, index: int, method: str, url: str) -> DomainError:
    """`error` as an answer about the whole transaction: each issue located in the entry
    that failed (its expression under Bundle.entry[i], its request in diagnostics)."""
    where = f"Bundle.entry[{index}]"
    request = f"entry {index}: {method} {url[:_SHOWN_URL]}"
    issues = []
    for issue in error.issues:
        expression = issue.expression
        if expression is None or not expression.startswith(("Task", where)):
            expression = where
        elif expression.startswith("Task"):
            expression = f"{where}.resource{expression[4:]}"
        diagnostics = request if issue.diagnostics is None else f"{request}: {issue.diagnostics}"
        issues.append(replace(issue, expression=expression, diagnostics=diagnostics))
    return replace(error, issues=issues)


# RFC 9110's reason phrases where Python's differ between versions (3.13 took these)
_PHRASES = {413: "Content Too Large", 422: "Unprocessable Content"}


def status_line(status: int) -> str:
    """A Bundle response's status as FHIR shows it: `201 Created`."""
    try:
        return f"{status} {_PHRASES.get(status) or HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def answer(
    status: int,
    *,
    location: str | None = None,
    etag: str | None = None,
    last_modified: str | None = None,
    resource: dict[str, Any] | None = None,
    full_url: str | None = None,
    issues: list[Issue] | None = None,
) -> dict[str, Any]:
    """One response entry: its status, where the version written is, and the resource
    (a Task, a Bundle) or, for a failure, an OperationOutcome in response.outcome."""
    response: dict[str, Any] = {"status": status_line(status)}
    if location is not None:
        response["location"] = location
    if etag is not None:
        response["etag"] = etag
    if last_modified is not None:
        response["lastModified"] = last_modified
    if issues is not None:
        response["outcome"] = operation_outcome(issues)
    entry: dict[str, Any] = {}
    if full_url is not None:
        entry["fullUrl"] = full_url
    if resource is not None:
        entry["resource"] = resource
    entry["response"] = response
    return entry


def response_bundle(kind: str, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch-response or transaction-response: entry i answers request entry i."""
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": answers}
