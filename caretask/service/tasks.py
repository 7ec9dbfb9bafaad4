"""The one way anything reads or writes tasks: the HTTP endpoints and `caretask import`.

A write goes through one pipeline, whoever sends it: the JSON text read within the body
limits (size, nesting, no key repeated within an object), validated with the Canvas rules
(domain.task_rules), stamped with its id, version and times, indexed (domain.indexing),
stored. Reads, history and search come back as typed results or finished Bundles. Every
refusal is a domain error (domain.errors) that the caller maps to its own answer: a status
and an OperationOutcome at the HTTP edge, a numbered line in an import's report.

No HTTP here: the edge reads the request and writes the response.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from caretask import metrics
from caretask.auth import scopes
from caretask.domain import (
    bundle,
    claims,
    indexing,
    profiles,
    search_params,
    subsetting,
    task_rules,
)
from caretask.domain.dates import instant, now_instant, parse_range
from caretask.domain.errors import (
    BusinessRule,
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidRequest,
    InvalidResource,
    InvalidSearch,
    Issue,
    MultipleMatches,
    NotFound,
    SearchTimeout,
    TooLarge,
    Unprocessable,
    VersionConflict,
)
from caretask.domain.etag import etag, parse_etag
from caretask.domain.http_dates import parse_http_date
from caretask.domain.json_keys import has_duplicate_keys
from caretask.domain.patch import Patch, apply_patch, read_patch
from caretask.domain.people import Person, with_note_authors, with_requester
from caretask.domain.profiles import Profile
from caretask.domain.references import ID_PATTERN, version_number
from caretask.domain.task_rules import MAX_DEPTH, is_deleted
from caretask.storage.base import (
    BuildVersion,
    Current,
    Find,
    Insert,
    NewVersion,
    Replace,
    SearchTimedOut,
    Serialize,
    StaleVersion,
    Storage,
    StoredTask,
    TaskNotFound,
    WriteProgram,
)

if TYPE_CHECKING:
    from caretask.config import Settings

NO_TASK = "no Task has this id"
# rounds of $claim-next's search before it gives up on tasks claimed faster than it looks
CLAIM_PASSES = 5


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """What a Task's JSON text may be: a request body's, or a line of an import's, and the
    profile whose rules it is held to."""

    max_bytes: int  # CARETASK_MAX_BODY_BYTES
    max_depth: int = MAX_DEPTH  # CARETASK_MAX_JSON_DEPTH
    profile: Profile = profiles.DEFAULT  # CARETASK_PROFILE


@dataclass(frozen=True, slots=True)
class Page:
    """A Bundle of tasks (a searchset or a history) as FHIR JSON, ready to send."""

    bundle: dict[str, Any]


# --- the write pipeline, as pure functions (an import runs them in worker processes) -----


def parse(
    raw: bytes, limits: BodyLimits, *, update: bool = False, person: Person | None = None
) -> dict[str, Any]:
    """The JSON text of a Task (`update`: the replacement of a stored one) to the validated
    Task: read_json, then validated."""
    return validated(read_json(raw, limits, "Task"), limits, update=update, person=person)


def read_json(raw: bytes, limits: BodyLimits, expression: str | None = None) -> Any:
    """A request body's JSON text as one JSON value. Raises TooLarge past the size limit,
    InvalidRequest for what is not one JSON value (empty, malformed, a key repeated within
    an object: json_keys); `expression` names the body in the empty body's issue."""
    if len(raw) > limits.max_bytes:
        raise TooLarge.single("too-long", f"the body is larger than {limits.max_bytes} bytes")
    if not raw.strip():
        raise InvalidRequest.single("structure", "the request body is empty", expression)
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest.single("structure", f"the body is not valid JSON: {error}") from None
    if has_duplicate_keys(raw, parsed):
        raise InvalidRequest.single(
            "structure", "the body repeats a key within one JSON object; FHIR JSON does not"
        )
    return parsed


def validated(
    parsed: Any, limits: BodyLimits, *, update: bool = False, person: Person | None = None
) -> dict[str, Any]:
    """A parsed body as the validated Task (task_rules.validate, then the profile's rules),
    whoever sent it: a create's or an update's body, a patch's result. Raises
    InvalidResource for what is not an acceptable Task, BusinessRule for an acceptable one
    the profile does not take. A new Task (not `update`) that a `person` sends without a
    requester gets them as requester, before the rules that require one."""
    if not update:
        parsed = with_requester(parsed, person)
    description = profiles.description_required(limits.profile, update)
    task = task_rules.validate(parsed, limits.max_depth, description)
    issue = profiles.status_issue(task, limits.profile)
    if issue is not None:
        raise BusinessRule([issue])
    return task


def build_version(
    body: dict[str, Any],
    *,
    task_id: str,
    version_id: int,
    now: str,
    last_updated: int,
    previous: dict[str, Any] | None = None,
    profile: Profile = profiles.DEFAULT,
    whole: bool = False,
    person: Person | None = None,
) -> NewVersion:
    """A validated body as the version to store: stamped (over `previous`, the current
    version, when there is one, keeping what the profile keeps of it unless the body is
    `whole`: a patch's result, the whole new state) and indexed. `now` is the instant as
    FHIR writes it, `last_updated` the same in microseconds since the epoch. The notes a
    `person` adds without an author get them as author (people.with_note_authors)."""
    body = with_note_authors(body, previous, person)
    if previous is not None and not whole:
        body = profiles.carry_over(body, previous, profile)
    resource = task_rules.stamp(
        body, task_id=task_id, version_id=version_id, now=now, previous=previous
    )
    return NewVersion(resource, indexing.extract(resource), last_updated)


def imported_id(body: dict[str, Any]) -> str:
    """The id an imported task is stored under: its own when that is a valid id (so an
    export imported elsewhere keeps its ids), else a new one."""
    given = body.get("id")
    return given if isinstance(given, str) and ID_PATTERN.fullmatch(given) else task_rules.new_id()


def query_pairs(query: str) -> list[tuple[str, str]]:
    """A query string's (name, value) pairs, `query` holding its bytes as latin-1. Bytes that
    are not UTF-8 are refused: replaced with U+FFFD they would be searched for, and a
    search has to say what it means."""
    try:
        return parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidSearch.single("invalid", "the query string is not valid UTF-8") from None


def uses_previous(body: dict[str, Any], profile: Profile) -> bool:
    """Whether build_version takes anything from `previous` for this body (else the
    previous version changes only versionId)."""
    return task_rules.stamp_uses_previous(body) or profiles.uses_previous(body, profile)


def _to_validate(parsed: Any) -> tuple[Any, bool]:
    """What $validate validates, and whether as an update: the body itself, or a
    Parameters' `resource` (FHIR's Resource-validate operation) with its `mode`."""
    if not isinstance(parsed, dict) or parsed.get("resourceType") != "Parameters":
        return parsed, False
    listed = parsed.get("parameter")
    parameters = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
    resources = [p.get("resource") for p in parameters if p.get("name") == "resource"]
    modes = [p.get("valueCode") for p in parameters if p.get("name") == "mode"]
    if len(resources) != 1 or resources[0] is None:
        text = "a Parameters body holds the Task to validate as one parameter 'resource'"
        raise InvalidRequest.single("required", text, "Parameters.parameter")
    if len(modes) > 1 or (modes and modes[0] not in ("create", "update")):
        text = "mode, if given, is one of create, update"
        raise InvalidRequest.single("not-supported", text, "Parameters.parameter")
    return resources[0], modes == ["update"]


def _checked_id(task_id: str) -> str:
    if not ID_PATTERN.fullmatch(task_id):
        raise NotFound.task(task_id, NO_TASK)
    return task_id


def _if_unmodified_since(value: str | None) -> int | None:
    """The header's date in seconds since the epoch; a malformed one is a 400 (ignoring it
    would make a conditional update unconditional)."""
    if value is None:
        return None
    seconds = parse_http_date(value)
    if seconds is None:
        raise InvalidRequest.single(
            "invalid",
            "If-Unmodified-Since must be an HTTP-date, like Sun, 06 Nov 1994 08:49:37 GMT",
        )
    return seconds


def _modified_since(current: StoredTask, since: int) -> VersionConflict | None:
    """A 412 when the task changed after `since` (HTTP-dates have whole seconds)."""
    updated = current.resource["meta"]["lastUpdated"]
    changed = parse_range(updated)
    if changed is None or changed[0] // 1_000_000 <= since:
        return None
    text = f"the Task changed after If-Unmodified-Since (it was last updated at {updated})"
    return VersionConflict.single("conflict", text)


def if_match_version(value: str | None) -> int | None:
    if value is None:
        return None
    version = parse_etag(value)
    if version is None:
        raise InvalidRequest.single("invalid", f"If-Match must look like {etag('<version>')}")
    return version


def _stale(wanted: int | None, current: int) -> VersionConflict:
    text = f"If-Match {etag(str(wanted))} is not the current version ({etag(current)})"
    return VersionConflict.single("conflict", text)


def _check_body_id(body: dict[str, Any], task_id: str) -> None:
    if "id" in body and body["id"] != task_id:
        raise InvalidRequest(
            [Issue("invalid", "the id in the body must match the id in the URL", "Task.id")]
        )


# a FHIR instant and the same in microseconds since the epoch (dates.now_instant)
Instant = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Change:
    """An update as it waits for the task it replaces: the validated body, the version
    If-Match names (None: whichever) and the If-Unmodified-Since date in seconds."""

    body: dict[str, Any]
    wanted: int | None = None
    since: int | None = None
    person: Person | None = None  # who sends it, if a person (domain.people)


@dataclass(frozen=True, slots=True)
class Condition:
    """A conditional interaction's search (If-None-Exist, or the query of a conditional
    update, patch or delete): the query that finds its tasks, and the key under which
    identical conditions are serialized (storage Serialize)."""

    query: search_params.SearchQuery
    key: str
    search: str  # as the client wrote it, less formatting (for messages)

    @classmethod
    def parse(cls, search: str) -> Condition:
        """`search` as a query string (`identifier=http://x|1&status=requested`, a leading
        `Task?` or `?` allowed). At least one parameter; any GET /Task refuses is refused."""
        text = search.strip()
        for prefix in ("Task?", "/Task?", "?"):
            if text.startswith(prefix):
                text = text[len(prefix) :]
                break
        pairs = [(n, v) for n, v in query_pairs(text) if n not in ("_format", "_pretty")]
        if not pairs:
            raise InvalidSearch.single(
                "invalid", "a conditional interaction needs at least one search parameter"
            )
        parsed = search_params.parse(pairs, lenient=False)
        if not parsed.conditions:
            raise InvalidSearch.single(
                "invalid", "a conditional interaction needs a search parameter that selects tasks"
            )
        # two matches are enough to tell none, one and many apart
        query = replace(search_params.matches_only(parsed, 2), sort=[])
        # from the conditions as parsed, not the text: searches that select the same tasks
        # however written (other result parameters, order, encoding) take the same lock
        key = "Task?" + "&".join(sorted(repr(c) for c in parsed.conditions))
        return cls(query, key, "&".join(f"{n}={v}" for n, v in pairs))


def rewrite(task_id: str, wanted: int | None, build: BuildVersion) -> WriteProgram[StoredTask]:
    """The program step that writes a task's next version, made by `build` from the current
    one (locked), if the version `wanted` names (None: whichever) is current."""
    current: StoredTask | None = yield Current(task_id)
    if current is None:
        raise NotFound.task(task_id, NO_TASK)
    if wanted is not None and current.version_id != wanted:
        raise _stale(wanted, current.version_id)
    stored: StoredTask = yield Replace(task_id, build(current))
    return stored


def erase(task_id: str, wanted: int | None, now: Instant | None = None) -> WriteProgram[StoredTask]:
    """The program step that deletes a task (a tombstone as its next version), if the
    version `wanted` names (None: whichever) is current; the tombstone, or the task as it
    is when it is deleted already (no new version: deleting is idempotent)."""
    current: StoredTask | None = yield Current(task_id)
    if current is None:
        raise NotFound.task(task_id, NO_TASK)
    if wanted is not None and current.version_id != wanted:
        raise _stale(wanted, current.version_id)
    if is_deleted(current.resource):
        return current
    stored: StoredTask = yield Replace(task_id, _tombstone(current, now))
    return stored


def patch_found(
    task_id: str | None, condition: Condition | None, wanted: int | None, build: BuildVersion
) -> WriteProgram[StoredTask]:
    """The program step of a patch once its task is known: `task_id`, or None when the
    conditional patch's search found none (a 404)."""
    if task_id is None:
        search = condition.search if condition is not None else ""
        raise NotFound.single("not-found", f"no Task matches {search}")
    return (yield from rewrite(task_id, wanted, build))


def erase_found(
    task_id: str | None, wanted: int | None, now: Instant | None = None
) -> WriteProgram[StoredTask | None]:
    """The program step of a delete once its task is known: `task_id`, or None when the
    conditional delete's search found none (nothing to delete: None, not an error)."""
    if task_id is None:
        return None
    return (yield from erase(task_id, wanted, now))


def _tombstone(current: StoredTask, now: Instant | None = None) -> NewVersion:
    """A delete's build: the tombstone that follows `current`; _Unchanged when it is
    one already."""
    if is_deleted(current.resource):
        raise _Unchanged(current)
    stamp, stamp_us = now or now_instant()
    resource = task_rules.tombstone(current.id, current.version_id + 1, stamp)
    return NewVersion(resource, indexing.extract(resource), stamp_us)


async def _counted(operation: str, work: Awaitable[tuple[StoredTask, bool]]) -> StoredTask:
    """A claim operation's task, its outcome counted (metrics.CLAIMS)."""
    try:
        task, changed = await work
    except NotFound as missing:
        nothing_left = missing.issues[0].text == claims.NOTHING_LEFT
        metrics.CLAIMS.labels(operation, "none-left" if nothing_left else "refused").inc()
        raise
    except DomainError:
        metrics.CLAIMS.labels(operation, "refused").inc()
        raise
    metrics.CLAIMS.labels(operation, "changed" if changed else "unchanged").inc()
    return task


def _not_deleted(current: StoredTask) -> None:
    if is_deleted(current.resource):
        raise Gone.task(current.id, str(current.version_id))


def found_id(task: StoredTask | None) -> str | None:
    return task.id if task is not None else None


def one_match(condition: Condition) -> WriteProgram[StoredTask | None]:
    """The program step that finds a condition's task: None for no match, the task for
    one, MultipleMatches (412) for more, as FHIR's conditional interactions require.
    Serialized on the condition, so that identical conditional writes racing each other
    (on any number of servers) see each other's results instead of both finding none."""
    yield Serialize(condition.key)
    found: list[StoredTask] = yield Find(condition.query)
    if len(found) > 1:
        raise MultipleMatches.single(
            "multiple-matches", f"more than one Task matches the condition {condition.search}"
        )
    return found[0] if found else None


def paging(pairs: list[tuple[str, str]], lenient: bool) -> tuple[int, int]:
    """A history's _count and _offset; another parameter is a 400 unless `lenient`."""
    count, offset = search_params.DEFAULT_COUNT, 0
    for name, raw in pairs:
        if name == "_count":
            count = min(search_params.parse_int(name, raw), search_params.MAX_COUNT)
        elif name == "_offset":
            offset = search_params.parse_int(name, raw, search_params.MAX_OFFSET)
        elif name not in ("_format", "_pretty", *subsetting.NAMES) and not lenient:
            raise InvalidSearch.single("invalid", f"unknown parameter '{name[:80]}'")
    return count, offset


class _Unchanged(Exception):
    """Nothing to write (the write is abandoned): a delete found the task deleted, a claim
    found it the claimant's, a release found it unowned."""

    def __init__(self, current: StoredTask) -> None:
        super().__init__(current.id)
        self.current = current


@dataclass(frozen=True, slots=True)
class FeedParams:
    since: int | None  # _since's low end, us
    at: tuple[int, int] | None  # _at's range, us
    count: int
    cursor: tuple[int, int, int, int] | None  # the position to resume before, the horizon
    applied: list[tuple[str, str]]  # what every page's links repeat
    wanted: subsetting.Subset  # _summary and _elements


def _feed_params(pairs: list[tuple[str, str]], lenient: bool) -> FeedParams:
    since = at = cursor = None
    count = search_params.DEFAULT_COUNT
    applied: list[tuple[str, str]] = []
    for name, raw in pairs:
        if name in ("_since", "_at"):
            bounds = parse_range(raw)
            if bounds is None:
                raise InvalidSearch.single(
                    "invalid", f"{name} must be a FHIR instant, like 2024-03-01T09:30:00Z"
                )
            if name == "_since":
                since = bounds[0]
            else:
                at = bounds
            applied.append((name, raw))
        elif name == "_count":
            count = min(search_params.parse_int(name, raw), search_params.MAX_COUNT)
        elif name == "_cursor":
            cursor = _decode_cursor(raw)
        elif name not in ("_format", "_pretty", *subsetting.NAMES) and not lenient:
            raise InvalidSearch.single("invalid", f"unknown parameter '{name[:80]}'")
    applied.append(("_count", str(count)))
    wanted = subsetting.read_parameters(pairs)
    applied += subsetting.subset_pairs(wanted)
    return FeedParams(since, at, count, cursor, applied, wanted)


def _encode_cursor(values: tuple[int, ...]) -> str:
    """A next link's place in the feed, opaque to clients."""
    text = ".".join(str(v) for v in values)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


_LAST_INSTANT_US = 253_402_300_800 * 1_000_000  # 10000-01-01T00:00:00Z


def _decode_cursor(raw: str) -> tuple[int, int, int, int]:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        values = tuple(int(v) for v in text.split("."))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        values = ()
    # instants (us) that a date can hold, from 1970 to 9999; pks and versions from 0
    if len(values) != 4 or not all(0 <= v < _LAST_INSTANT_US for v in values):
        raise InvalidSearch.single("invalid", "_cursor is not one this server's links gave")
    return values


# --- the service ---------------------------------------------------------------------------


class TaskService:
    """Tasks over one Storage, held to the configured limits."""

    def __init__(self, storage: Storage, limits: BodyLimits, search_timeout: float) -> None:
        self.storage = storage
        self.limits = limits
        self.search_timeout = search_timeout

    @classmethod
    def from_settings(cls, storage: Storage, settings: Settings) -> TaskService:
        limits = BodyLimits(settings.max_body_bytes, settings.max_json_depth, settings.profile)
        return cls(storage, limits, settings.search_timeout)

    @property
    def profile(self) -> Profile:
        return self.limits.profile

    def parse(
        self, raw: bytes, *, update: bool = False, person: Person | None = None
    ) -> dict[str, Any]:
        return parse(raw, self.limits, update=update, person=person)

    def shown_as_asked(self, task: StoredTask, base: str, query: str) -> dict[str, Any]:
        """A read's (or vread's) Task as its query's _summary and _elements ask."""
        body = self.shown(task, base)
        if "_summary" in query or "_elements" in query:
            body = subsetting.subset(body, *subsetting.read_parameters(query_pairs(query)))
        return body

    def shown(self, task: StoredTask, base: str) -> dict[str, Any]:
        """A stored Task as this server returns it (bundle.render_task, in the profile)."""
        return bundle.render_task(task.resource, base, self.profile)

    def write_returns_task(self, prefer_return: str | None) -> bool:
        """Whether a create or an update answers with the stored Task: the client's
        Prefer: return=..., else the profile's default (canvas: an empty body, as the seed;
        fhir: the Task, from which generic clients take the new id and version into their
        copy)."""
        if prefer_return in ("minimal", "representation"):
            return prefer_return == "representation"
        return self.profile == profiles.FHIR

    async def create(self, raw: bytes, *, person: Person | None = None) -> StoredTask:
        """A new task from the JSON text of a Task: version 1, under a new id."""
        body = with_note_authors(self.parse(raw, person=person), None, person)
        task_id = task_rules.new_id()

        now, now_us = now_instant()
        made = build_version(body, task_id=task_id, version_id=1, now=now, last_updated=now_us)
        # only meta.lastUpdated holds the time unless stamp() fills in an authoredOn or a
        # note's time (what it would otherwise take from a previous version)
        dated = task_rules.stamp_uses_previous(body)

        def build() -> NewVersion:
            # runs inside the write, which takes the time there (Storage.feed_horizon); the
            # costly part (validation, indexing) stays outside unless dates need it again
            now, now_us = now_instant()
            if dated:
                return build_version(
                    body, task_id=task_id, version_id=1, now=now, last_updated=now_us
                )
            return NewVersion(task_rules.restamp(made.resource, now), made.index, now_us)

        return await self.storage.create_task(task_id, build)

    async def create_if_none_exist(
        self, raw: bytes, if_none_exist: str, *, person: Person | None = None
    ) -> tuple[StoredTask, bool]:
        """A conditional create: the task the If-None-Exist search finds (and False), or a
        new one from the JSON text (and True); MultipleMatches when it finds several."""
        condition = Condition.parse(if_none_exist)
        body = self.parse(raw, person=person)

        def program() -> WriteProgram[tuple[StoredTask, bool]]:
            found = yield from one_match(condition)
            return (yield from self.insert_unless(body, found, person=person))

        return await self.storage.transact(program)

    def insert_unless(
        self,
        body: dict[str, Any],
        found: StoredTask | None,
        *,
        task_id: str | None = None,
        now: Instant | None = None,
        person: Person | None = None,
    ) -> WriteProgram[tuple[StoredTask, bool]]:
        """The program step of a conditional create once its search found `found` (or
        nothing): that task, nothing written (and False), or a new one (and True)."""
        if found is not None:
            return found, False
        return (yield from self.insert(body, task_id=task_id, now=now, person=person)), True

    def insert(
        self,
        body: dict[str, Any],
        *,
        task_id: str | None = None,
        now: Instant | None = None,
        person: Person | None = None,
    ) -> WriteProgram[StoredTask]:
        """The program step that stores a validated body as a new task: version 1 under
        `task_id` (a Bundle entry's, chosen before its program) or a new id, stamped inside
        the transaction (or at `now`, a transaction's single instant)."""
        task_id = task_id or task_rules.new_id()
        stamp, stamp_us = now or now_instant()
        new = build_version(
            body, task_id=task_id, version_id=1, now=stamp, last_updated=stamp_us, person=person
        )
        stored: StoredTask = yield Insert(task_id, new)
        return stored

    async def read(self, task_id: str) -> StoredTask:
        """The current version; Gone when it is a delete's."""
        task = await self.storage.read_task(_checked_id(task_id))
        if task is None:
            raise NotFound.task(task_id, NO_TASK)
        if is_deleted(task.resource):
            raise Gone.task(task_id, str(task.version_id))
        return task

    async def vread(self, task_id: str, version: str) -> StoredTask:
        """The version a `_history/<vid>` segment names."""
        number = version_number(version)
        task_id = _checked_id(task_id)
        task = None
        if number is not None:
            task = await self.storage.read_version(task_id, number)
        if task is None:
            raise NotFound.task(task_id, "no such version of this Task")
        if is_deleted(task.resource):  # FHIR: a deleted version reads as 410 too
            raise Gone.task(task_id, str(task.version_id))
        return task

    def change(
        self,
        body: dict[str, Any],
        if_match: str | None,
        if_unmodified_since: str | None,
        person: Person | None = None,
    ) -> Change:
        """An update's validated body with its preconditions read from their headers (a
        malformed one is a 400)."""
        wanted, since = if_match_version(if_match), _if_unmodified_since(if_unmodified_since)
        return Change(body, wanted, since, person)

    def revised(
        self, current: StoredTask, change: Change, now: Instant | None = None
    ) -> NewVersion:
        """The version that `change` makes of `current`, the task's current version read
        under its lock: every rule of an update, whichever way it arrives (PUT /Task/<id>,
        a conditional PUT, a Bundle entry). The time is taken there too (unless the caller
        gives one: a transaction's single instant), so versions and their lastUpdated keep
        one order, and If-Unmodified-Since is held to the version being replaced, as
        If-Match is."""
        _check_body_id(change.body, current.id)
        if change.wanted is not None and change.wanted != current.version_id:
            raise _stale(change.wanted, current.version_id)
        if change.since is not None and (conflict := _modified_since(current, change.since)):
            raise conflict
        stamp, stamp_us = now or now_instant()
        # a deleted task comes back as a fresh one: nothing carried over, authoredOn and
        # note times default to now as on a create
        deleted = is_deleted(current.resource)
        return build_version(
            change.body,
            task_id=current.id,
            version_id=current.version_id + 1,
            now=stamp,
            last_updated=stamp_us,
            previous=None if deleted else current.resource,
            profile=self.profile,
            person=change.person,
        )

    async def update(
        self,
        task_id: str,
        if_match: str | None,
        read_body: Callable[[], Awaitable[bytes]],
        if_unmodified_since: str | None = None,
        *,
        person: Person | None = None,
    ) -> StoredTask:
        """The task's next version from the JSON text `read_body` gives, if the version
        `if_match` names (an ETag; None: whichever) is current and the task has not changed
        after `if_unmodified_since` (an HTTP-date; None: whenever). The body is read after
        the id and the conditions are found acceptable: a request wrong in several ways is
        told the first, in that order."""
        task_id = _checked_id(task_id)
        wanted, since = if_match_version(if_match), _if_unmodified_since(if_unmodified_since)
        body = self.parse(await read_body(), update=True)
        _check_body_id(body, task_id)
        change = Change(body, wanted, since, person)
        try:
            # the one-statement path (no program): `revised` runs under the task's lock
            return await self.storage.update_task(task_id, partial(self.revised, change=change))
        except TaskNotFound:
            raise NotFound.task(task_id, NO_TASK) from None

    def replace(
        self, task_id: str, change: Change, now: Instant | None = None
    ) -> WriteProgram[StoredTask]:
        """The program step that updates a task (`revised`): NotFound for an unknown id."""
        task_id = _checked_id(task_id)
        return (yield from rewrite(task_id, None, partial(self.revised, change=change, now=now)))

    def upsert(
        self,
        found: StoredTask | None,
        change: Change,
        *,
        may_create: bool,
        now: Instant | None = None,
        task_id: str | None = None,
    ) -> WriteProgram[tuple[StoredTask, bool]]:
        """The program step of a conditional update once its search found `found` (or
        nothing): that task updated (and False), or a new one (and True).

        With no match, a body that names an id is a 400: this server assigns ids
        (CapabilityStatement updateCreate false), which FHIR allows it to refuse (R4
        http.html#cond-update, "no matches, id provided"); If-Match names a version of a task
        that does not exist, a 412. Creating needs the create scope (`may_create`) besides the
        update scope of the request; the new task's id is `task_id` if given (a Bundle
        entry's, chosen before its program)."""
        if found is not None:
            return (yield from self.replace(found.id, change, now)), False
        if "id" in change.body:
            raise InvalidRequest(
                [
                    Issue(
                        "invalid",
                        "no Task matches the condition, and this server assigns the ids of "
                        "new tasks: send the Task without an id to create it",
                        "Task.id",
                    )
                ]
            )
        if change.wanted is not None:
            text = f"If-Match {etag(change.wanted)}: no Task matches the condition"
            raise VersionConflict.single("conflict", text)
        if not may_create:
            raise Forbidden.scope(scopes.needs_for(change.person)[scopes.CREATE])
        # held to what a create needs
        body = validated(change.body, self.limits, person=change.person)
        return (yield from self.insert(body, task_id=task_id, now=now, person=change.person)), True

    async def update_by_search(
        self,
        search: str,
        if_match: str | None,
        read_body: Callable[[], Awaitable[bytes]],
        if_unmodified_since: str | None = None,
        *,
        may_create: bool,
        person: Person | None = None,
    ) -> tuple[StoredTask, bool]:
        """A conditional update (`PUT /Task?<search>`): `upsert` of what the search finds,
        in one program serialized on the search (one_match), so that identical conditional
        updates racing each other make one task. MultipleMatches for several matches."""
        condition = Condition.parse(search)
        wanted, since = if_match_version(if_match), _if_unmodified_since(if_unmodified_since)
        change = Change(self.parse(await read_body(), update=True), wanted, since, person)

        def program() -> WriteProgram[tuple[StoredTask, bool]]:
            found = yield from one_match(condition)
            return (yield from self.upsert(found, change, may_create=may_create))

        return await self.storage.transact(program)

    async def patch(
        self,
        task_id: str,
        if_match: str | None,
        if_unmodified_since: str | None,
        read_body: Callable[[], Awaitable[bytes]],
        media_type: str,
        base: str,
        *,
        person: Person | None = None,
    ) -> StoredTask:
        """The task's next version: the JSON Patch or FHIRPath Patch (domain.patch, by
        `media_type`) that `read_body` gives, applied to the current version as clients
        read it (with its permalink: `base` is the server's base URL) and validated as an
        update's body. Conditions and the order of refusals are update's (a malformed patch
        is refused before the task is looked up). The result is the whole new state in both
        profiles (no carry-over of notes or the task-group: a patch that removes a note
        removes it); a result that is not an acceptable Task is a 422 (Unprocessable), as
        FHIR asks of a patch."""
        task_id = _checked_id(task_id)
        wanted = if_match_version(if_match)
        build = await self._patcher(if_unmodified_since, read_body, media_type, base, person)
        return await self._rewrite(task_id, build, wanted)

    async def patch_by_search(
        self,
        search: str,
        if_match: str | None,
        if_unmodified_since: str | None,
        read_body: Callable[[], Awaitable[bytes]],
        media_type: str,
        base: str,
        *,
        person: Person | None = None,
    ) -> StoredTask:
        """A conditional patch (PATCH /Task?search): patch's, on the one task the search
        finds; none is a 404, several a 412 (MultipleMatches)."""
        condition = Condition.parse(search)
        wanted = if_match_version(if_match)
        build = await self._patcher(if_unmodified_since, read_body, media_type, base, person)

        def program() -> WriteProgram[StoredTask]:
            found = yield from one_match(condition)
            return (yield from patch_found(found_id(found), condition, wanted, build))

        return await self.storage.transact(program)

    async def _patcher(
        self,
        if_unmodified_since: str | None,
        read_body: Callable[[], Awaitable[bytes]],
        media_type: str,
        base: str,
        person: Person | None = None,
    ) -> BuildVersion:
        """The patch's build, from the request's conditions and body."""
        since = _if_unmodified_since(if_unmodified_since)
        parsed = read_json(await read_body(), self.limits)
        # off the event loop: parsing 200 FHIRPath paths takes some 0.4 s
        document = await asyncio.to_thread(read_patch, parsed, media_type, self.limits.max_depth)
        return self.patch_build(document, since, base, person=person)

    def patch_build(
        self,
        document: Patch,
        since: int | None,
        base: str,
        now: Instant | None = None,
        *,
        person: Person | None = None,
    ) -> BuildVersion:
        """A patch's build: the next version from the current one, run under the task's
        lock so that the patch applies to the version it replaces (no lost update). `now`:
        a transaction's single instant (else the time it runs)."""

        def build(current: StoredTask) -> NewVersion:
            if is_deleted(current.resource):  # nothing to patch: PUT brings it back
                raise Gone.task(current.id, str(current.version_id))
            if since is not None and (conflict := _modified_since(current, since)):
                raise conflict
            # as clients read it, so that their pointers and indexes hold (the permalink
            # comes after the Task's own extensions), less the `type` the canvas profile
            # shows on references, which would otherwise be stored
            as_read = bundle.with_permalink(current.resource, base)
            patched = apply_patch(
                as_read,
                document,
                max_depth=self.limits.max_depth,
                max_bytes=self.limits.max_bytes,
            )
            try:
                body = validated(patched, self.limits, update=True)
            except InvalidResource as invalid:
                raise Unprocessable(invalid.issues) from None
            stamp, stamp_us = now or now_instant()
            return build_version(
                body,
                task_id=current.id,
                version_id=current.version_id + 1,
                now=stamp,
                last_updated=stamp_us,
                previous=current.resource,
                profile=self.profile,
                whole=True,
                person=person,
            )

        return build

    async def delete(self, task_id: str, if_match: str | None) -> StoredTask:
        """Store a tombstone as the task's next version (task_rules.tombstone), if the
        version `if_match` names (None: whichever) is current; the tombstone. A task
        already deleted stays as it is (no new version): deleting is idempotent."""
        task_id = _checked_id(task_id)
        try:
            return await self._rewrite(task_id, _tombstone, if_match_version(if_match))
        except _Unchanged as done:
            return done.current

    async def delete_by_search(self, search: str, if_match: str | None) -> StoredTask | None:
        """A conditional delete (DELETE /Task?search): delete's, on the one task the search
        finds (searches skip deleted tasks); None when it finds none (nothing to delete:
        like deleting twice, not an error), MultipleMatches (412) when it finds several."""
        condition = Condition.parse(search)
        wanted = if_match_version(if_match)

        def program() -> WriteProgram[StoredTask | None]:
            return (yield from erase_found(found_id((yield from one_match(condition))), wanted))

        return await self.storage.transact(program)

    async def claim(self, task_id: str, owner: str, base: str) -> StoredTask:
        """$claim: the task's next version with `owner` as its owner, if it has none; the
        task as it is if it is theirs already (no new version); Conflict (409) if it is
        someone else's."""
        task_id = _checked_id(task_id)
        claimed = self.patch_build(claims.claim_patch(owner), None, base)

        def build(current: StoredTask) -> NewVersion:
            _not_deleted(current)
            if not claims.check_claim(current.resource, current.id, owner):
                raise _Unchanged(current)
            return claimed(current)

        return await _counted(claims.CLAIM, self._rewrite_unless_unchanged(task_id, build))

    async def release(self, task_id: str, releaser: str | None, base: str) -> StoredTask:
        """$release: the task's next version without an owner; the task as it is when it
        has none. `releaser`: the person asking, who must be its owner (None: a system
        client, which may release any task)."""
        task_id = _checked_id(task_id)
        released = self.patch_build(claims.release_patch(), None, base)

        def build(current: StoredTask) -> NewVersion:
            _not_deleted(current)
            if not claims.check_release(current.resource, current.id, releaser):
                raise _Unchanged(current)
            return released(current)

        return await _counted(claims.RELEASE, self._rewrite_unless_unchanged(task_id, build))

    async def claim_next(self, criteria: str | None, owner: str, base: str) -> StoredTask:
        """$claim-next: the first unowned task the criteria's search finds, in its order,
        claimed for `owner` in one transaction. Claims of the same search are serialized
        (on every server sharing the database), and each candidate is read again under its
        lock, so that two claimers never get the same task; NotFound when none is left."""
        query, key = claims.claim_query(criteria)
        claimed = self.patch_build(claims.claim_patch(owner), None, base)

        def program() -> WriteProgram[StoredTask]:
            yield Serialize(key)
            for _ in range(CLAIM_PASSES):
                found: list[StoredTask] = yield Find(query)
                if not found:
                    raise NotFound.single("not-found", claims.NOTHING_LEFT)
                for candidate in found:
                    current: StoredTask | None = yield Current(candidate.id)
                    if current is None or is_deleted(current.resource):
                        continue
                    if claims.owner_of(current.resource) is not None:
                        continue  # claimed by another search's claim since the Find
                    stored: StoredTask = yield Replace(current.id, claimed(current))
                    return stored
            raise Conflict.single(
                "transient", "the matching tasks were all claimed while this claim ran; retry"
            )

        async def changed() -> tuple[StoredTask, bool]:
            return await self.storage.transact(program), True

        return await _counted(claims.CLAIM_NEXT, changed())

    async def _rewrite_unless_unchanged(
        self, task_id: str, build: BuildVersion
    ) -> tuple[StoredTask, bool]:
        """The new version `build` makes (and True), or the task as it is (and False) when
        it found nothing to change."""
        try:
            return await self._rewrite(task_id, build, None), True
        except _Unchanged as unchanged:
            return unchanged.current, False

    async def _rewrite(self, task_id: str, build: BuildVersion, wanted: int | None) -> StoredTask:
        """storage.update_task, its refusals as domain errors."""
        try:
            return await self.storage.update_task(task_id, build, wanted)
        except TaskNotFound:
            raise NotFound.task(task_id, NO_TASK) from None
        except StaleVersion as stale:
            raise _stale(wanted, stale.current) from None

    def validate(self, raw: bytes) -> list[Issue]:
        """POST /Task/$validate: every problem found in a Task (the body, or the `resource`
        parameter of a Parameters body, with `mode` create or update), or one informational
        issue when it is valid. Stores nothing. Raises InvalidRequest for a body that is not
        JSON, or a Parameters that holds no resource."""
        parsed = read_json(raw, self.limits)
        task, update = _to_validate(parsed)
        try:
            validated(task, self.limits, update=update)
        except (InvalidResource, BusinessRule) as invalid:
            return invalid.issues
        return [Issue("informational", "the Task is valid", severity="information")]

    async def changes(
        self, query: str, *, lenient: bool, base: str, link_path: str, path: str
    ) -> Page:
        """A page of the change feed (`path`: /Task/_history or /_history; only Tasks are
        stored, so the two are the same): every version, deletes included, newest first,
        by _since, _at and _count, and a next link that resumes after the page's last
        entry (keyset paging: no change is missed or repeated however many are written
        meanwhile). meta.lastUpdated is the horizon (Storage.feed_horizon) that the first
        page took: the _since of the next poll."""
        params = _feed_params(query_pairs(query), lenient)
        if params.cursor is not None:
            before, horizon = params.cursor[:3], params.cursor[3]
        else:
            horizon = await self.storage.feed_horizon()
            top = horizon if params.at is None else min(horizon, params.at[1] + 1)
            before = (top, 0, 0)
        found = []
        if params.count > 0:
            since = -(2**62) if params.since is None else params.since
            at = None if params.at is None else params.at[0]
            found = await self.storage.changes(since, before, at, params.count + 1)
        shown = found[: params.count]
        next_cursor = None
        if len(found) > params.count:
            next_cursor = _encode_cursor((*shown[-1].position, horizon))
        body = bundle.change_feed(
            [c.task.resource for c in shown],
            horizon=instant(horizon),
            path=path,
            base=base,
            link_path=link_path,
            applied=params.applied,
            next_cursor=next_cursor,
            profile=self.profile,
            wanted=params.wanted,
        )
        return Page(body)

    async def history(
        self, task_id: str, query: str, *, lenient: bool, base: str, link_path: str
    ) -> Page:
        """A task's versions, newest first, paged by the query's _count and _offset.
        `base` is the server's base URL (fullUrls, permalinks), `link_path` its path (the
        host-relative paging links)."""
        task_id = _checked_id(task_id)
        pairs = query_pairs(query)
        count, offset = paging(pairs, lenient)
        wanted = subsetting.read_parameters(pairs, count=True)
        if wanted[0] == "count":
            count = 0
        try:
            total, versions = await self.storage.history(task_id, count, offset)
        except TaskNotFound:
            raise NotFound.task(task_id, NO_TASK) from None
        body = bundle.history(
            task_id,
            total,
            [v.resource for v in versions],
            base=base,
            link_path=link_path,
            count=count,
            offset=offset,
            profile=self.profile,
            wanted=wanted,
        )
        return Page(body)

    async def search(
        self, pairs: list[tuple[str, str]], *, lenient: bool, base: str, link_path: str
    ) -> Page:
        """The searchset Bundle for the search parameters `pairs` (domain.search_params);
        `base` and `link_path` as for history."""
        query = search_params.parse(pairs, lenient=lenient)
        try:
            result = await self.storage.search(query)
        except SearchTimedOut:
            seconds = self.search_timeout
            raise SearchTimeout(
                [
                    Issue(
                        "timeout",
                        f"the search did not finish within {seconds:g} s "
                        "(CARETASK_SEARCH_TIMEOUT); narrow it, with fewer values or "
                        "parameters, or retry later",
                    )
                ],
                retry_after=max(1, math.ceil(seconds)),
            ) from None
        body: dict[str, Any]
        if query.summary_count:
            body = {"resourceType": "Bundle", "type": "searchset", "total": result.total}
        else:
            body = bundle.searchset(
                query,
                result.total,
                [t.resource for t in result.tasks],
                base=base,
                link_path=link_path + "/Task",
                has_more=result.has_more,
                included=[t.resource for t in result.included],
                profile=self.profile,
            )
        return Page(body)
