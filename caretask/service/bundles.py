"""Batch and transaction Bundles (POST /): each entry run through the TaskService's own
steps, so that an entry is held to exactly the rules of the request it stands for.

Everything that can be decided before touching the database is decided first, outside
any transaction: the Bundle read (domain.transaction), each entry's scope, body and
search validated. Only then does a transaction run, as ONE write program
(Storage.transact): on SQLite one item of the group commit, on PostgreSQL one database
transaction, so the writer is held for the program's own work only.

A transaction's program takes a single instant, inside the transaction, as the
meta.lastUpdated of every version it writes: a Bundle's writes share it, which keeps them
identifiable as one set (subscriptions will announce them together).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from caretask.auth import scopes
from caretask.domain import search_params, task_rules, transaction
from caretask.domain.dates import now_instant
from caretask.domain.errors import (
    DomainError,
    Forbidden,
    Gone,
    InvalidRequest,
    Issue,
    NotFound,
    TooLarge,
    status,
)
from caretask.domain.etag import etag, etag_matches
from caretask.domain.patch import JSON_PATCH, Patch, read_patch
from caretask.domain.people import Person
from caretask.domain.references import version_number
from caretask.domain.task_rules import is_deleted
from caretask.domain.transaction import Entry, Refused
from caretask.service.tasks import (
    NO_TASK,
    Change,
    Condition,
    Instant,
    TaskService,
    erase_found,
    found_id,
    if_match_version,
    one_match,
    paging,
    patch_found,
    query_pairs,
    read_json,
    validated,
)
from caretask.storage.base import (
    Current,
    Serialize,
    StorageUnavailable,
    StoredTask,
    WriteProgram,
)

if TYPE_CHECKING:
    from caretask.config import Settings

# the permission each interaction needs (auth.scopes)
_NEEDS = {
    "create": scopes.CREATE,
    "update": scopes.UPDATE,
    "patch": scopes.UPDATE,
    "delete": scopes.DELETE,
    "read": scopes.READ,
    "vread": scopes.READ,
    "history-instance": scopes.READ,
    "search-type": scopes.SEARCH,
}


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """What the audit trail records of one entry, as of a request of its own. `search` is
    the query as sent: the edge redacts it."""

    interaction: str
    method: str
    task_id: str | None
    version_id: int | None
    search: str | None
    status: int


@dataclass(frozen=True, slots=True)
class Processed:
    """A Bundle's answer: the response Bundle, or the failure of a transaction (one
    OperationOutcome naming the entry); and a record for each entry."""

    kind: str  # batch or transaction
    bundle: dict[str, Any] | None
    records: list[EntryRecord]
    failure: DomainError | None = None


@dataclass
class _Prepared:
    """An entry ready to run: what could be checked without the database, checked."""

    entry: Entry
    body: dict[str, Any] | None = None  # POST, PUT: validated, references resolved
    condition: Condition | None = None
    change: Change | None = None
    pairs: list[tuple[str, str]] | None = None  # GET Task?...
    patch: Patch | None = None  # PATCH: the patch, read
    wanted: int | None = None  # PATCH, DELETE: the version ifMatch names
    task_id: str | None = None  # a create's (or a conditional update's) id, chosen now
    urns: set[str] = field(default_factory=set)  # the fullUrls its resource references


@dataclass(frozen=True, slots=True)
class _Done:
    """An entry's result: the task written or read (or a Bundle of them), and its status."""

    status: int
    task: StoredTask | None = None
    page: dict[str, Any] | None = None


class BundleService:
    """Batch and transaction Bundles over a TaskService."""

    def __init__(self, tasks: TaskService, max_entries: int, max_bytes: int) -> None:
        self.tasks = tasks
        self.max_entries = max_entries  # CARETASK_MAX_BUNDLE_ENTRIES
        self.max_bytes = max_bytes  # CARETASK_MAX_BUNDLE_BYTES (each entry's: the tasks')

    @classmethod
    def from_settings(cls, tasks: TaskService, settings: Settings) -> BundleService:
        return cls(tasks, settings.max_bundle_entries, settings.max_bundle_bytes)

    async def process(
        self,
        raw: bytes,
        granted: frozenset[str],
        *,
        base: str,
        link_path: str,
        prefer_return: str | None,
        person: Person | None = None,
    ) -> Processed:
        """The answer to a Bundle's JSON text from a caller granted `granted` (scope
        letters), `person` if a person sent it (their writes record them, as each entry's
        own request would). A Bundle that cannot be read at all raises its DomainError."""
        parsed = read_json(raw, replace(self.tasks.limits, max_bytes=self.max_bytes), "Bundle")
        request = transaction.read_bundle(parsed, self.max_entries, base)
        run = _Run(self, granted, base, link_path, prefer_return, person)
        if request.kind == transaction.TRANSACTION:
            return await run.transaction(request.entries)
        return await run.batch(request.entries)


class _Run:
    """One Bundle's processing."""

    def __init__(
        self,
        service: BundleService,
        granted: frozenset[str],
        base: str,
        link_path: str,
        prefer_return: str | None,
        person: Person | None = None,
    ) -> None:
        self.person = person
        # refusals name the scopes of the caller's kind (user/ for a person)
        self.needs = scopes.needs_for(person)
        self.tasks = service.tasks
        self.granted = granted
        self.base = base
        self.link_path = link_path
        self.returns_task = service.tasks.write_returns_task(prefer_return)
        self.placeholders: dict[str, str] = {}  # a transaction's urn:uuid fullUrl: task id

    # --- before any transaction ------------------------------------------------------------

    def prepare(self, entry: Entry) -> _Prepared:
        """The entry checked as its own request would be: scope, then URL, then body."""
        needed = _NEEDS[entry.interaction]
        if needed not in self.granted:
            raise Forbidden.scope(self.needs[needed])
        prepared = _Prepared(entry)
        if entry.condition is not None:
            if scopes.SEARCH not in self.granted:  # a conditional entry searches, as GET
                raise Forbidden.scope(self.needs[scopes.SEARCH])
            prepared.condition = Condition.parse(entry.condition)
        if entry.interaction == "search-type":
            prepared.pairs = query_pairs(entry.search or "")
            search_params.parse(prepared.pairs, lenient=False)
        elif entry.interaction == "history-instance" and entry.search:
            paging(query_pairs(entry.search), lenient=False)
        if entry.interaction in ("patch", "delete"):
            prepared.wanted = if_match_version(entry.if_match)
        if entry.interaction == "patch":
            prepared.patch = self.patch_document(entry)
        if entry.method in ("POST", "PUT"):
            if _encoded_size(entry.resource, where_of(entry)) > self.tasks.limits.max_bytes:
                raise TooLarge.single(
                    "too-long", f"the resource is larger than {self.tasks.limits.max_bytes} bytes"
                )
            prepared.urns = transaction.urn_references(entry.resource)
            where = f"Bundle.entry[{entry.index}]"
            transaction.unresolvable(prepared.urns, self.placeholders, where)
            resource = transaction.resolve(entry.resource, self.placeholders)
            update = entry.method == "PUT"
            prepared.body = validated(
                resource, self.tasks.limits, update=update, person=self.person
            )
            if update:
                prepared.change = self.tasks.change(
                    prepared.body, entry.if_match, None, self.person
                )
            if entry.full_url is not None:
                prepared.task_id = self.placeholders.get(entry.full_url)
        return prepared

    def patch_document(self, entry: Entry) -> Patch:
        """A PATCH entry's patch, as FHIR carries one in a Bundle: a FHIRPath Patch (a
        Parameters resource), or a JSON Patch in a Binary resource (its contentType
        application/json-patch+json, the patch base64-encoded in `data`)."""
        where = f"Bundle.entry[{entry.index}].resource"
        resource = entry.resource
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if kind == "Parameters":
            return read_patch(resource, "application/fhir+json", self.tasks.limits.max_depth)
        if kind == "Binary" and resource.get("contentType") == JSON_PATCH:
            try:
                text = base64.b64decode(str(resource.get("data", "")), validate=True)
            except binascii.Error:
                raise InvalidRequest.single(
                    "structure", "the Binary's data is not base64", where
                ) from None
            # held to a request body's rules: its size, nesting, no key repeated
            document = read_json(text, self.tasks.limits)
            return read_patch(document, JSON_PATCH, self.tasks.limits.max_depth)
        raise InvalidRequest.single(
            "structure",
            "a PATCH entry's resource is a FHIRPath Patch (Parameters) or a Binary holding a "
            f"JSON Patch ({JSON_PATCH}, base64 in data)",
            where,
        )

    # --- batch -----------------------------------------------------------------------------

    async def batch(self, entries: list[Entry | Refused]) -> Processed:
        """Each entry on its own, in request order: its own transaction, its own answer."""
        answers, records = [], []
        for item in entries:
            if isinstance(item, Refused):
                answers.append(self.refusal(item.error))
                records.append(_record_of(item, status(item.error)))
                continue
            try:
                prepared = self.prepare(item)
                done = await self.run_alone(prepared)
            except DomainError as error:
                answers.append(self.refusal(error))
                records.append(_record_of(item, status(error)))
                continue
            except StorageUnavailable as error:
                issue = [Issue("transient", error.text)]
                answers.append(transaction.answer(503, issues=issue))
                records.append(_record_of(item, 503))
                continue
            answers.append(self.answer(item, done))
            records.append(_record_of(item, done.status, done.task))
        return Processed(
            transaction.BATCH, transaction.response_bundle(transaction.BATCH, answers), records
        )

    async def run_alone(self, prepared: _Prepared) -> _Done:
        entry = prepared.entry
        if entry.writes:

            def program() -> WriteProgram[_Done]:
                found = None
                if prepared.condition is not None:
                    found = yield from one_match(prepared.condition)
                return (yield from self.write(prepared, found, None))

            return await self.tasks.storage.transact(program)
        return await self.read(prepared)

    # --- transaction -----------------------------------------------------------------------

    async def transaction(self, entries: list[Entry | Refused]) -> Processed:
        """All entries or none, in one write program; reads answered after the commit,
        their tasks' existence checked inside it (a read that fails fails the whole)."""
        read: list[Entry] = []
        for item in entries:
            if isinstance(item, Refused):
                return self.failed(entries, item.index, item.method, item.url, item.error)
            read.append(item)
        self.placeholders = {
            urn: task_rules.new_id()
            for entry in read
            if (urn := transaction.placeholder(entry)) is not None
        }
        prepared: list[_Prepared] = []
        for entry in read:
            try:
                prepared.append(self.prepare(entry))
            except DomainError as error:
                return self.failed(entries, entry.index, entry.method, entry.url, error)
        try:
            _check_conditions(prepared)
        except _EntryFailed as failed:
            entry = failed.entry
            return self.failed(entries, entry.index, entry.method, entry.url, failed.error)
        ordered = [prepared[e.index] for e in transaction.processing_order(read)]
        try:
            done = await self.tasks.storage.transact(lambda: self.program(ordered))
        except _EntryFailed as failed:
            entry = failed.entry
            return self.failed(entries, entry.index, entry.method, entry.url, failed.error)
        answers = []
        for ready in prepared:
            index = ready.entry.index
            if not ready.entry.writes:
                try:
                    done[index] = await self.read(ready, done[index].task)
                except DomainError as error:  # a search that timed out: the writes stand
                    answers.append(self.refusal(error))
                    done[index] = _Done(status(error))
                    continue
            answers.append(self.answer(ready.entry, done[index]))
        records = [
            _record_of(p.entry, done[p.entry.index].status, done[p.entry.index].task)
            for p in prepared
        ]
        kind = transaction.TRANSACTION
        return Processed(kind, transaction.response_bundle(kind, answers), records)

    def program(self, ordered: list[_Prepared]) -> WriteProgram[dict[int, _Done]]:
        """The transaction: its conditions, then its writes and reads in FHIR's order.

        Every condition (If-None-Exist, PUT Task?...) is searched before any entry writes,
        against the database as the transaction found it: so a conditional entry's fullUrl
        resolves (to the task found, or the new task's id) before the entries that
        reference it are written, whatever their order. Two entries with the same
        condition are refused beforehand (`_check_conditions`), as both would find none
        and create two tasks."""
        ids = dict(self.placeholders)
        conditional = [p for p in ordered if p.condition is not None]
        # every condition's lock first, in one order: two transactions that share
        # conditions then never wait for each other in a cycle
        for key in sorted({p.condition.key for p in conditional if p.condition}):
            yield Serialize(key)
        found: dict[int, StoredTask | None] = {}
        # the tasks its DELETE entries delete: FHIR runs those first, so a later entry's
        # condition does not find them (`ordered` has the deletes first)
        deleted = {p.entry.task_id for p in ordered if p.entry.interaction == "delete"}
        for p in conditional:
            assert p.condition is not None
            try:
                match = yield from one_match(p.condition)
            except DomainError as error:
                raise _EntryFailed(p.entry, error) from None
            if match is not None and p.entry.interaction == "delete":
                deleted.add(match.id)
            elif match is not None and match.id in deleted:
                match = None
            found[p.entry.index] = match
            if match is not None and p.entry.full_url in ids:
                ids[p.entry.full_url] = match.id
        # the tasks it replaces locked first, in one order (no deadlock), and only then
        # the instant every version it writes carries: later than any version before them
        targets = {t for p in ordered if p.entry.writes and (t := _target(p, found))}
        for task_id in sorted(targets):
            yield Current(task_id)
        now = now_instant()
        done: dict[int, _Done] = {}
        written: set[str] = set()
        for p in (p for p in ordered if p.entry.writes):
            try:
                target = _target(p, found)
                if target is not None and target in written:
                    raise InvalidRequest.single(
                        "invalid", f"another entry of the transaction writes Task/{target}"
                    )
                done[p.entry.index] = result = yield from self.write(
                    p, found.get(p.entry.index), now, ids
                )
                if result.task is not None and (p.entry.method != "POST" or result.status == 201):
                    written.add(result.task.id)  # (a conditional create that found one: no)
            except DomainError as error:
                raise _EntryFailed(p.entry, error) from None
        for p in ordered:
            if not p.entry.writes:
                try:
                    done[p.entry.index] = yield from self.check_read(p)
                except DomainError as error:
                    raise _EntryFailed(p.entry, error) from None
        return done

    def failed(
        self, entries: list[Entry | Refused], index: int, method: str, url: str, error: DomainError
    ) -> Processed:
        located = transaction.at_entry(error, index, method, url)
        code = status(error)
        records = [_record_of(e, code) for e in entries]
        return Processed(transaction.TRANSACTION, None, records, located)

    # --- the steps -------------------------------------------------------------------------

    def write(
        self,
        prepared: _Prepared,
        found: StoredTask | None,
        now: Instant | None,
        ids: dict[str, str] | None = None,
    ) -> WriteProgram[_Done]:
        """The program step of a write entry, its condition's match (if any) in `found`;
        `now` a transaction's instant, `ids` its fullUrls' tasks. One case per interaction."""
        entry = prepared.entry
        # the task a patch or delete writes: the URL's, or its search's match (or none)
        task_id = entry.task_id if prepared.condition is None else found_id(found)
        match entry.interaction:
            case "create":  # (`found`: If-None-Exist's match, if it has one)
                body = self.body(prepared, ids)
                stored, created = yield from self.tasks.insert_unless(
                    body, found, task_id=prepared.task_id, now=now, person=self.person
                )
                return _Done(201 if created else 200, stored)
            case "update":
                assert prepared.change is not None
                change = replace(prepared.change, body=self.body(prepared, ids))
                if prepared.condition is None:
                    assert entry.task_id is not None
                    return _Done(200, (yield from self.tasks.replace(entry.task_id, change, now)))
                stored, created = yield from self.tasks.upsert(
                    found,
                    change,
                    may_create=scopes.CREATE in self.granted,
                    now=now,
                    task_id=prepared.task_id,
                )
                return _Done(201 if created else 200, stored)
            case "patch":
                assert prepared.patch is not None
                build = self.tasks.patch_build(
                    prepared.patch, None, self.base, now, person=self.person
                )
                patched = patch_found(task_id, prepared.condition, prepared.wanted, build)
                return _Done(200, (yield from patched))
            case _:  # delete
                return _Done(204, (yield from erase_found(task_id, prepared.wanted, now)))

    def body(self, prepared: _Prepared, ids: dict[str, str] | None) -> dict[str, Any]:
        """The entry's validated body, its references resolved to the ids as they stand
        (a conditional entry's fullUrl resolves to the task its search found)."""
        assert prepared.body is not None
        if ids is None or all(ids[u] == self.placeholders[u] for u in prepared.urns):
            return prepared.body
        resource = transaction.resolve(prepared.entry.resource, ids)
        update = prepared.entry.method == "PUT"
        return validated(resource, self.tasks.limits, update=update, person=self.person)

    def check_read(self, prepared: _Prepared) -> WriteProgram[_Done]:
        """Inside a transaction: the task a read or vread names exists (as the transaction
        leaves it); a read's task itself."""
        entry = prepared.entry
        if entry.task_id is None:
            return _Done(200)
        current: StoredTask | None = yield Current(entry.task_id)
        if current is None:
            raise NotFound.task(entry.task_id, NO_TASK)
        if entry.interaction == "read" and is_deleted(current.resource):
            raise Gone.task(entry.task_id, str(current.version_id))
        if entry.interaction == "vread":  # the version exists, and is not the deletion
            number = version_number(entry.version or "")
            if number is None or not 1 <= number <= current.version_id:
                raise NotFound.task(entry.task_id, "no such version of this Task")
            if number == current.version_id and is_deleted(current.resource):
                raise Gone.task(entry.task_id, str(number))
        return _Done(200, current if entry.interaction == "read" else None)

    async def read(self, prepared: _Prepared, known: StoredTask | None = None) -> _Done:
        """A GET entry's answer (`known`: the task a transaction read)."""
        entry = prepared.entry
        tasks = self.tasks
        if entry.interaction == "search-type":
            assert prepared.pairs is not None
            page = await tasks.search(
                prepared.pairs, lenient=False, base=self.base, link_path=self.link_path
            )
            return _Done(200, page=page.bundle)
        assert entry.task_id is not None
        if entry.interaction == "history-instance":
            page = await tasks.history(
                entry.task_id,
                entry.search or "",
                lenient=False,
                base=self.base,
                link_path=self.link_path,
            )
            return _Done(200, page=page.bundle)
        if entry.interaction == "vread":
            task = await tasks.vread(entry.task_id, entry.version or "")
        else:
            task = known or await tasks.read(entry.task_id)
        if entry.if_none_match is not None and etag_matches(entry.if_none_match, task.version_id):
            return _Done(304, task)  # as GET answers If-None-Match
        return _Done(200, task)

    # --- answers ---------------------------------------------------------------------------

    def answer(self, entry: Entry, done: _Done) -> dict[str, Any]:
        if done.page is not None:
            return transaction.answer(done.status, resource=done.page)
        task = done.task
        if task is None:
            return transaction.answer(done.status)
        meta = task.resource.get("meta", {})
        shown = None
        # not a deleted task (a tombstone is no Task), nor one a conditional create found
        # for a caller that may not read it
        found = entry.interaction == "create" and done.status == 200
        hidden = is_deleted(task.resource) or (found and scopes.READ not in self.granted)
        if done.status != 304 and (not entry.writes or self.returns_task) and not hidden:
            shown = self.tasks.shown(task, self.base)
        return transaction.answer(
            done.status,
            location=f"Task/{task.id}/_history/{task.version_id}" if entry.writes else None,
            etag=etag(task.version_id),
            last_modified=meta.get("lastUpdated"),
            resource=shown,
            full_url=f"{self.base}/Task/{task.id}" if shown is not None else None,
        )

    def refusal(self, error: DomainError) -> dict[str, Any]:
        return transaction.answer(status(error), issues=error.issues)


class _EntryFailed(Exception):
    """A transaction's entry failed inside the program: the program rolls back."""

    def __init__(self, entry: Entry, error: DomainError) -> None:
        super().__init__(entry.index)
        self.entry, self.error = entry, error


def _target(prepared: _Prepared, found: dict[int, StoredTask | None]) -> str | None:
    """The existing task a write entry replaces, as far as known before it runs."""
    entry = prepared.entry
    if entry.method == "POST":
        return None
    if prepared.condition is not None:
        match = found.get(entry.index)
        return match.id if match is not None else None
    return entry.task_id


def where_of(entry: Entry) -> str:
    return f"Bundle.entry[{entry.index}].resource"


def _encoded_size(resource: Any, where: str) -> int:
    """The size of a resource as JSON text; a resource nested past what JSON encoders take
    is refused (validation would refuse it for its depth anyway)."""
    try:
        return len(orjson.dumps(resource))
    except orjson.JSONEncodeError:
        raise InvalidRequest.single(
            "too-costly", "the resource is nested too deeply", where
        ) from None


def _check_conditions(prepared: list[_Prepared]) -> None:
    """A transaction's conditional entries have different conditions."""
    seen: set[str] = set()
    for p in prepared:
        if p.condition is not None:
            if p.condition.key in seen:
                text = "another entry of the transaction has the same condition"
                raise _EntryFailed(p.entry, InvalidRequest.single("invalid", text))
            seen.add(p.condition.key)


def _record_of(entry: Entry | Refused, code: int, task: StoredTask | None = None) -> EntryRecord:
    if isinstance(entry, Refused):
        return EntryRecord("unknown", entry.method, None, None, None, code)
    task_id = task.id if task is not None else entry.task_id
    version = task.version_id if task is not None else None
    search = entry.condition or entry.search  # a conditional create's If-None-Exist too
    return EntryRecord(entry.interaction, entry.method, task_id, version, search, code)
