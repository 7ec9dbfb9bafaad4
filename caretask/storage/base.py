"""The storage interface every engine implements, and the records it trades in."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from caretask.domain.audit import AuditRecord
from caretask.domain.indexing import TaskIndex
from caretask.domain.search_params import SearchQuery


@dataclass(frozen=True, slots=True)
class StoredTask:
    id: str
    version_id: int
    resource: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    name: str
    secret_hash: str
    scope: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class SearchResult:
    total: int | None
    tasks: list[StoredTask]
    has_more: bool
    included: list[StoredTask] = field(default_factory=list)


class NewVersion(NamedTuple):
    """A task's next version: the resource to store, its index, when (us since the epoch)."""

    resource: dict[str, Any]
    index: TaskIndex  # type: ignore[assignment]  # shadows tuple.index, never called here
    last_updated: int


# makes the next version from the current one, inside the write (domain work only, no I/O)
BuildVersion = Callable[[StoredTask], NewVersion]
# makes a new task's first version, inside the write (its lastUpdated taken there)
BuildFirst = Callable[[], NewVersion]

# a place in the change feed's order, newest first: (last_updated, task_pk, version_id)
FeedPosition = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Change:
    """A stored version as the change feed lists it, with its place in the feed."""

    task: StoredTask
    position: FeedPosition


# --- write programs: several reads and writes in one database transaction -----------------
#
# A program is a generator that yields these operations and is sent each one's result; the
# engine runs them in order in one transaction and commits when the generator returns (its
# value is transact's), or rolls everything back if it raises. Deciding what to write (the
# domain work) stays in the program, free of I/O, so that the synchronous SQLite engine and
# the asynchronous PostgreSQL engine drive the same program.


@dataclass(frozen=True, slots=True)
class Current:
    """-> StoredTask | None: the task with this id as it stands in this transaction, locked
    against other writers until the transaction ends."""

    task_id: str


@dataclass(frozen=True, slots=True)
class Find:
    """-> list[StoredTask]: the tasks the query matches in this transaction (its writes
    included), at most `query.count` of them, in the query's order."""

    query: SearchQuery


@dataclass(frozen=True, slots=True)
class Serialize:
    """-> None: hold a lock named `key` until the transaction ends, so that programs that
    ask for the same key (identical conditional writes) run one after another, each
    seeing what the one before it wrote, on every server sharing the database."""

    key: str


@dataclass(frozen=True, slots=True)
class Insert:
    """-> StoredTask: a new task, version 1 (`new.resource` stamped with `task_id`)."""

    task_id: str
    new: NewVersion


@dataclass(frozen=True, slots=True)
class Replace:
    """-> StoredTask: the next version of a task this program read with Current (or wrote):
    version_id is the current one plus one."""

    task_id: str
    new: NewVersion


WriteOp = Current | Find | Serialize | Insert | Replace
T = TypeVar("T")
WriteProgram = Generator[WriteOp, Any, T]


class StaleVersion(Exception):
    """A conditional write found another version current."""

    def __init__(self, task_id: str, current: int) -> None:
        super().__init__(task_id)
        self.current = current


class TaskNotFound(Exception):
    """The task addressed does not exist."""


class StorageUnavailable(Exception):
    """The database cannot do this now (unreachable, lost mid-write, its disk full): a
    503 with Retry-After, not a 500. `text` is shown to clients: no SQL, no paths."""

    def __init__(self, text: str, retry_after: int = 1) -> None:
        super().__init__(text)
        self.text, self.retry_after = text, retry_after


class SearchTimedOut(Exception):
    """A search ran past the engine's search timeout and was stopped."""


class SchemaNotCurrent(Exception):
    """The database is not at this caretask's schema revision (`caretask migrate` it)."""


class SchemaTooNew(Exception):
    """The database was migrated by a newer caretask than this one."""


class Storage(Protocol):
    """What the HTTP edge needs from a database. Every write commits before returning.

    Every version's last_updated is taken inside its write (the BuildVersion or
    BuildFirst runs there, under the engine's write lock or after its transaction
    began): the change feed's horizon (feed_horizon) relies on it."""

    async def create_task(self, task_id: str, build: BuildFirst) -> StoredTask:
        """Store version 1 of a new task, made by `build` inside the write."""
        ...

    async def read_task(self, task_id: str) -> StoredTask | None: ...

    async def read_version(self, task_id: str, version_id: int) -> StoredTask | None: ...

    async def update_task(
        self, task_id: str, build: BuildVersion, expected_version: int | None = None
    ) -> StoredTask:
        """Write the next version, made by `build` from the current one while the task is
        locked, so that no other write comes between the two and an update never fails
        for contention (last writer wins). TaskNotFound for an unknown id; StaleVersion if
        `expected_version` (If-Match) is given and is not the current version."""
        ...

    async def transact(self, program: Callable[[], WriteProgram[T]]) -> T:
        """Run the program `program()` makes in one transaction (see WriteOp) and commit it:
        all of its writes or, if it raises, none. `program` may be called again (a new
        generator, from the start) if the connection broke before anything committed."""
        ...

    async def search(self, query: SearchQuery) -> SearchResult: ...

    async def history(
        self, task_id: str, count: int, offset: int
    ) -> tuple[int, list[StoredTask]]: ...

    async def feed_horizon(self) -> int:
        """An instant (us since the epoch) up to which the change feed is complete: every
        version with an earlier last_updated is committed and visible to every read that
        starts after this returns, and no version committed later has an earlier one."""
        ...

    async def changes(
        self, since: int, before: FeedPosition, at: int | None, count: int
    ) -> list[Change]:
        """Up to `count` stored versions with last_updated >= `since` that come before
        `before` in the feed's order, newest first. `at`: only versions still current at
        that instant or replaced after it (FHIR's _at)."""
        ...

    async def create_client(self, record: ClientRecord) -> None: ...

    async def get_client(self, client_id: str) -> ClientRecord | None: ...

    async def revoke_client(self, client_id: str) -> bool: ...

    async def record_audit(self, records: Sequence[AuditRecord]) -> None:
        """Store a batch of audit records as one row (domain.audit.encode_batch)."""
        ...

    async def audit_batches(
        self, client_id: str | None, since: int | None, after_seq: int, limit: int
    ) -> list[tuple[int, str]]:
        """Up to `limit` stored batches past `after_seq`, oldest first: (seq, records).
        Every batch holding a matching record is among them; domain.audit.select filters."""
        ...

    async def signing_key(self) -> bytes:
        """The token signing key shared by every server on this database (made once)."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers and takes writes. Cheap (a
        load balancer calls it every few seconds): it writes nothing, and it does not wait
        for the connections or threads that requests use."""
        ...

    async def close(self) -> None: ...
