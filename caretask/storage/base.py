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
    # a public client (a browser app: it has no secret, secret_hash is ""), and the
    # redirect URIs its authorization requests may name, compared as exact strings
    public: bool = False
    redirect_uris: tuple[str, ...] = ()
    # `caretask clients rotate`: the secret before the current one, taken until then (s)
    previous_secret_hash: str | None = None
    previous_secret_until: int | None = None
    created_at: int | None = None  # s since the epoch


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A person who signs in (`caretask users create`)."""

    username: str
    fhir_user: str  # "Practitioner/<id>"
    teams: tuple[str, ...]  # "Group/<id>" references
    password_hash: str  # scrypt (auth.secrets)
    disabled: bool


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authorization code or a refresh token stands for: who signed in, in which
    app, with what scope. `family` names the refresh tokens one code started."""

    client_id: str
    username: str
    scope: str
    family: str
    redirect_uri: str = ""  # a code's: the token request must name it again
    code_challenge: str = ""  # a code's: PKCE S256


class Redeemed(NamedTuple):
    """A code or refresh token taken: its grant, or None (unknown, expired, revoked or used
    already); `reused` when it had been used before (its family is then revoked)."""

    grant: Grant | None
    reused: bool = False


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


# --- subscriptions -------------------------------------------------------------------------
#
# A task write records, in its own transaction, one event for each subscription whose
# filter matched the task's previous version or its new one (the transactional outbox):
# numbered 1, 2, 3... per subscription in commit order, without gaps. Delivery reads them
# back, claims a subscription for a while (a lease) so that one server at a time sends its
# notifications, and records how far the receiver acknowledged.

# what may happen to a subscription's events, in the SubscriptionStatus's words
SUBSCRIPTION_STATUSES = ("requested", "active", "error", "off")


@dataclass(frozen=True, slots=True)
class SubscriptionDraft:
    """What the service layer stores of a Subscription it validated (domain.subscriptions):
    the resource, and the fields the database matches and selects on."""

    resource: dict[str, Any]  # as the client will read it back, id and meta included
    status: str  # one of SUBSCRIPTION_STATUSES
    filter: str  # the Task search expression without "Task?" ("" matches every task)
    channel: str  # "rest-hook" | "websocket"
    endpoint: str  # channel.endpoint ("" for websocket): search by url
    heartbeat_period: int | None  # seconds, None for no heartbeats
    # who created it ("user:<username>", "client:<client_id>"): stored at creation only
    owner: str | None = None
    end_at: int | None = None  # its `end`, us since the epoch: then it is turned off
    # a new status of "requested" (a create, or an update that changed the channel) starts
    # delivery over: handshake first, failures forgotten


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    id: str
    version_id: int
    resource: dict[str, Any]  # its stored body; status below is the authoritative one
    status: str
    filter: str
    channel: str
    endpoint: str
    heartbeat_period: int | None
    secret: str  # the HMAC-SHA256 key of its notifications, made by the server at creation
    events_since_start: int  # the number of its newest event (0: none yet)
    delivered_through: int  # the newest event number the receiver acknowledged
    failing_since: int | None  # us since the epoch: the first of the current failures
    next_attempt: int  # us since the epoch: delivery is not tried before this
    last_sent: int | None  # us since the epoch: the last notification or heartbeat sent
    error: str | None  # the last delivery failure, in words (SubscriptionStatus.error)
    created: int  # us since the epoch
    owner: str | None = None  # who created it (SubscriptionDraft.owner)
    end_at: int | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionEvent:
    subscription_id: str
    number: int  # its event number (events-since-subscription-start when it happened)
    task_id: str
    version_id: int  # the task version that triggered it (a delete: the tombstone)
    kind: str  # "create" | "update" | "delete"
    occurred: int  # us since the epoch: that version's lastUpdated
    resource: dict[str, Any] | None  # that version of the task, when asked for


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What a delivery attempt ends with (Storage.finish_delivery): the fields it sets."""

    status: str
    delivered_through: int
    failing_since: int | None
    next_attempt: int
    last_sent: int | None
    error: str | None
    # the subscription's version the attempt started from: if the client has written a
    # newer one meanwhile ("off", or "requested" again), its status stands
    from_version: int


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


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A worker's database connections, as its metrics show them."""

    size: int  # connections it may use at once (PostgreSQL: the pool; SQLite: readers)
    in_use: int
    waiting: int  # requests waiting for a pooled connection; SQLite: writes queued


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

    # --- subscriptions ---------------------------------------------------------------------

    async def create_subscription(
        self, subscription_id: str, draft: SubscriptionDraft, secret: str, now: int
    ) -> StoredSubscription:
        """Version 1; events are recorded for it from this write's commit on."""
        ...

    async def read_subscription(self, subscription_id: str) -> StoredSubscription | None: ...

    async def update_subscription(
        self, subscription_id: str, draft: SubscriptionDraft, expected_version: int | None
    ) -> StoredSubscription:
        """The next version. Its events and their numbering go on; a status of "requested"
        resets the delivery fields (handshake again, failures forgotten, next_attempt now).
        TaskNotFound (the subscription's) for an unknown id, StaleVersion as update_task."""
        ...

    async def delete_subscription(self, subscription_id: str) -> bool:
        """Delete it and its events; whether it existed."""
        ...

    async def search_subscriptions(
        self,
        endpoint: str | None,
        statuses: Sequence[str],
        count: int,
        offset: int,
        owner: str | None = None,
    ) -> tuple[int, list[StoredSubscription]]:
        """(total, page): by channel endpoint (exact), any of `statuses` (none: any) and
        who created them (None: anyone), oldest first."""
        ...

    async def subscription_events(
        self, subscription_id: str, after: int, through: int | None, limit: int, resources: bool
    ) -> list[SubscriptionEvent]:
        """Its kept events numbered after `after` (and at most `through`), oldest first;
        with the task versions when `resources`."""
        ...

    async def claim_deliveries(
        self, owner: str, now: int, lease: int, limit: int
    ) -> list[StoredSubscription]:
        """Lease (owner until now + lease, us) up to `limit` rest-hook subscriptions that
        have work due and no live lease: status "requested" (a handshake), or "active" with
        events past delivered_through or a heartbeat due (last_sent + heartbeat_period <=
        now, or never sent), and next_attempt <= now. Each is leased to one caller at a time
        across every server on the database (FOR UPDATE SKIP LOCKED on PostgreSQL)."""
        ...

    async def finish_delivery(
        self, subscription_id: str, owner: str, outcome: DeliveryOutcome
    ) -> bool:
        """Record an attempt's outcome and release the lease, if `owner` still holds it
        (whether it did). delivered_through never goes back."""
        ...

    def on_events(self, callback: Callable[[], None]) -> None:
        """`callback` runs on the event loop after each write of this process that recorded
        subscription events has committed (delivery need not wait for its next poll)."""
        ...

    async def expire_subscriptions(self, now: int) -> int:
        """Turn off the Subscriptions whose end (end_at) is at or before `now` (us); how
        many. A read first: a call that finds none writes nothing."""
        ...

    async def subscription_backlog(self) -> int:
        """Events recorded and not yet delivered, over every rest-hook subscription that
        still gets them."""
        ...

    def pool_stats(self) -> PoolStats: ...

    async def purge_events(self, before: int) -> int:
        """Delete the events that occurred before `before` (us); how many."""
        ...

    async def create_client(self, record: ClientRecord) -> None: ...

    async def get_client(self, client_id: str) -> ClientRecord | None: ...

    async def revoke_client(self, client_id: str) -> bool: ...

    async def list_clients(self) -> list[ClientRecord]:
        """Every client, revoked ones too, oldest first."""
        ...

    async def rotate_client_secret(self, client_id: str, new_hash: str, until: int) -> bool:
        """Make `new_hash` the client's secret, keeping the current one as the previous
        until `until` (s); False for an unknown, revoked or public client."""
        ...

    # --- people and their grants (storage.people_sql) ---------------------------------------

    async def create_user(self, record: UserRecord) -> bool:
        """False if the username is taken."""
        ...

    async def get_user(self, username: str) -> UserRecord | None: ...

    async def list_users(self) -> list[UserRecord]:
        """Every user, by username."""
        ...

    async def disable_user(self, username: str) -> bool:
        """Whether an enabled user of that name was disabled."""
        ...

    async def set_password(self, username: str, password_hash: str) -> bool: ...

    async def save_code(self, code_hash: str, grant: Grant, expires_at: int) -> None:
        """Store an authorization code's digest (`expires_at`: s since the epoch)."""
        ...

    async def redeem_code(self, code_hash: str, now: int) -> Redeemed:
        """Take a code once: its grant; a code taken before revokes its refresh family."""
        ...

    async def save_refresh(self, token_hash: str, grant: Grant, expires_at: int) -> None: ...

    async def rotate_refresh(
        self, token_hash: str, new_hash: str, now: int, expires_at: int, client_id: str
    ) -> Redeemed:
        """Take a refresh token once and store its successor (`new_hash`, same family) in
        the same transaction; one taken before revokes its whole family. One presented by
        another client than its own is refused and left as it was (not used up)."""
        ...

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
