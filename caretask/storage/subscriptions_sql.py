"""Subscriptions in SQL, shared by both engines: their statements, and the outbox.

The outbox: a task write reads the subscriptions that listen (status requested, active or
error), asks in one statement which of their filters the task matches before the write and
again after it, and, just before its transaction ends, numbers one event per match and
subscription. The filters are Task searches, matched by the very WHERE clause a search
builds (sql_search.where), so that a subscription selects exactly the tasks GET /Task
would. Events are numbered last, in subscription order, after every task lock the
transaction takes: on PostgreSQL the subscription's row lock is then held only until the
commit, so its numbers follow commit order, and two writers never wait for each other in
a cycle over them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import orjson

from caretask.domain.errors import DomainError
from caretask.domain.search_params import parse_filter
from caretask.storage.base import (
    DeliveryOutcome,
    StoredSubscription,
    SubscriptionDraft,
    SubscriptionEvent,
)
from caretask.storage.dialect import Dialect
from caretask.storage.sql_search import where

log = logging.getLogger(__name__)

# statuses whose subscriptions get events (not "off")
LISTENING = ("requested", "active", "error")
_COLUMNS = (
    "id, version_id, {resource}, status, filter, channel, endpoint, heartbeat_period, secret, "
    "events_since_start, delivered_through, failing_since, next_attempt, last_sent, error, "
    "created, created_by, end_at"
)
_US = 1_000_000


def subscription_row(row: Sequence[Any]) -> StoredSubscription:
    """A row read with Statements' columns as a StoredSubscription."""
    resource = row[2] if isinstance(row[2], dict) else orjson.loads(row[2])
    return StoredSubscription(
        id=row[0],
        version_id=row[1],
        resource=resource,
        status=row[3],
        filter=row[4],
        channel=row[5],
        endpoint=row[6],
        heartbeat_period=row[7],
        secret=row[8],
        events_since_start=row[9],
        delivered_through=row[10],
        failing_since=row[11],
        next_attempt=row[12],
        last_sent=row[13],
        error=row[14],
        created=row[15],
        owner=row[16],
        end_at=row[17],
    )


def event_row(row: Sequence[Any]) -> SubscriptionEvent:
    """A row of Statements.events as a SubscriptionEvent."""
    resource = None
    if len(row) > 6 and row[6] is not None:
        resource = row[6] if isinstance(row[6], dict) else orjson.loads(row[6])
    return SubscriptionEvent(row[0], row[1], row[2], row[3], row[4], row[5], resource)


@dataclass(frozen=True, slots=True)
class Statements:
    listening: str  # pk, filter of the subscriptions that get events
    insert: str
    read: str
    current: str  # pk, version_id of one, locked
    update: str
    delete_events: str
    delete: str
    count: str
    page: str
    events: str
    events_with_resources: str
    bump: str  # n, pk -> the new events_since_start
    insert_event: str
    claim: str
    finish: str
    purge: str
    due: str  # whether any claim could succeed now (a cheap read before the write)
    expiring: str  # whether any Subscription's end has passed and it is not off yet
    expire: str
    backlog: str
    # PostgreSQL: every subscription's numbers taken, and all events inserted, in one
    # statement each (arrays), so that a write holds the subscriptions' row locks for two
    # round trips, not two per subscription; None on SQLite, whose statements cost no trip
    bump_all: str | None
    insert_events: str | None

    def search(
        self, endpoint: str | None, statuses: Sequence[str], owner: str | None = None
    ) -> tuple[str, list[Any]]:
        """The WHERE clause (with its parameters) of a search by endpoint, statuses and
        creator."""
        clauses, params = [], []
        if owner is not None:
            clauses.append("created_by = ?")
            params.append(owner)
        if endpoint is not None:
            clauses.append("endpoint = ?")
            params.append(endpoint)
        if statuses:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


_DUE = (
    "channel = 'rest-hook' AND lease_until <= ? AND next_attempt <= ? AND ("
    "status = 'requested' "
    "OR (status = 'active' AND events_since_start > delivered_through) "
    "OR (status IN ('active', 'error') AND heartbeat_period IS NOT NULL "
    f"AND (last_sent IS NULL OR last_sent + CAST(heartbeat_period AS BIGINT) * {_US} <= ?)))"
)


_ENDED = "end_at IS NOT NULL AND end_at <= ? AND status <> 'off'"


@cache
def statements(d: Dialect) -> Statements:
    q, cast = d.sql, d.json_cast
    columns = _COLUMNS.format(resource=d.body("resource"))
    listening = ", ".join(f"'{s}'" for s in LISTENING)
    skip_locked = " FOR UPDATE SKIP LOCKED" if d.pyformat else ""
    return Statements(
        listening=q(
            f"SELECT pk, filter FROM subscriptions WHERE status IN ({listening}) ORDER BY pk"
        ),
        insert=q(
            "INSERT INTO subscriptions (id, version_id, resource, status, filter, channel, "
            "endpoint, heartbeat_period, secret, events_since_start, delivered_through, "
            "failing_since, next_attempt, last_sent, error, created, lease_owner, lease_until, "
            "created_by, end_at) "
            f"VALUES (?, 1, ?{cast}, ?, ?, ?, ?, ?, ?, 0, 0, NULL, 0, NULL, NULL, ?, NULL, 0, "
            f"?, ?) RETURNING {columns}"
        ),
        read=q(f"SELECT {columns} FROM subscriptions WHERE id = ?"),
        current=q("SELECT pk, version_id FROM subscriptions WHERE id = ?") + d.lock_row,
        # a new "requested" starts delivery over: handshake, failures forgotten
        update=q(
            f"UPDATE subscriptions SET version_id = version_id + 1, resource = ?{cast}, "
            "status = ?, filter = ?, channel = ?, endpoint = ?, heartbeat_period = ?, "
            "end_at = ?, failing_since = CASE WHEN ? THEN NULL ELSE failing_since END, "
            "error = CASE WHEN ? THEN NULL ELSE error END, "
            "next_attempt = CASE WHEN ? THEN 0 ELSE next_attempt END "
            f"WHERE pk = ? RETURNING {columns}"
        ),
        delete_events=q("DELETE FROM subscription_events WHERE subscription_pk = ?"),
        delete=q("DELETE FROM subscriptions WHERE pk = ?"),
        count="SELECT count(*) FROM subscriptions",
        page=f"SELECT {columns} FROM subscriptions",
        events=q(
            "SELECT s.id, e.number, e.task_id, e.version_id, e.kind, e.occurred "
            "FROM subscription_events e JOIN subscriptions s ON s.pk = e.subscription_pk "
            "WHERE s.id = ? AND e.number > ? AND e.number <= ? ORDER BY e.number LIMIT ?"
        ),
        events_with_resources=q(
            "SELECT s.id, e.number, e.task_id, e.version_id, e.kind, e.occurred, "
            f"{d.body('v.resource')} "
            "FROM subscription_events e JOIN subscriptions s ON s.pk = e.subscription_pk "
            "LEFT JOIN tasks t ON t.id = e.task_id "
            "LEFT JOIN task_versions v ON v.task_pk = t.pk AND v.version_id = e.version_id "
            "WHERE s.id = ? AND e.number > ? AND e.number <= ? ORDER BY e.number LIMIT ?"
        ),
        bump=q(
            "UPDATE subscriptions SET events_since_start = events_since_start + ? "
            "WHERE pk = ? RETURNING events_since_start"
        ),
        insert_event=q(
            "INSERT INTO subscription_events "
            "(subscription_pk, number, task_id, version_id, kind, occurred) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        ),
        claim=q(
            "UPDATE subscriptions SET lease_owner = ?, lease_until = ? WHERE pk IN ("
            f"SELECT pk FROM subscriptions WHERE {_DUE} ORDER BY next_attempt, pk LIMIT ?"
            f"{skip_locked}) RETURNING {columns}"
        ),
        # the client's "off" (or a new request, reset) while a delivery ran stands
        finish=q(
            "UPDATE subscriptions SET "
            "status = CASE WHEN status IN ('off', 'requested') AND version_id <> ? "
            "THEN status ELSE ? END, "
            "delivered_through = CASE WHEN delivered_through > ? THEN delivered_through "
            "ELSE ? END, "
            "failing_since = ?, next_attempt = ?, last_sent = ?, error = ?, "
            "lease_owner = NULL, lease_until = 0 "
            "WHERE id = ? AND lease_owner = ?"
        ),
        purge=q("DELETE FROM subscription_events WHERE occurred < ?"),
        backlog=(
            "SELECT COALESCE(SUM(events_since_start - delivered_through), 0) FROM subscriptions "
            f"WHERE channel = 'rest-hook' AND status IN ({listening})"
        ),
        due=q(f"SELECT 1 FROM subscriptions WHERE {_DUE} LIMIT 1"),
        expiring=q(f"SELECT 1 FROM subscriptions WHERE {_ENDED} LIMIT 1"),
        expire=q(f"UPDATE subscriptions SET status = 'off' WHERE {_ENDED}"),
        # the rows are locked in pk order (the sorted, locking sub-select), as writers
        # that lock the same subscriptions in different orders could deadlock
        bump_all=(
            "UPDATE subscriptions s SET events_since_start = s.events_since_start + v.n "
            "FROM (SELECT pk FROM subscriptions WHERE pk = ANY(%s) ORDER BY pk FOR UPDATE) l, "
            "unnest(%s::bigint[], %s::bigint[]) AS v(pk, n) "
            "WHERE s.pk = l.pk AND s.pk = v.pk RETURNING s.pk, s.events_since_start"
            if d.pyformat
            else None
        ),
        insert_events=(
            "INSERT INTO subscription_events "
            "(subscription_pk, number, task_id, version_id, kind, occurred) "
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::int[], "
            "%s::text[], %s::bigint[])"
            if d.pyformat
            else None
        ),
    )


def insert_params(
    subscription_id: str, draft: SubscriptionDraft, secret: str, now: int
) -> tuple[Any, ...]:
    body = orjson.dumps(draft.resource).decode()
    return (
        subscription_id,
        body,
        draft.status,
        draft.filter,
        draft.channel,
        draft.endpoint,
        draft.heartbeat_period,
        secret,
        now,
        draft.owner,
        draft.end_at,
    )


def update_params(draft: SubscriptionDraft, pk: int) -> tuple[Any, ...]:
    restart = draft.status == "requested"
    body = orjson.dumps(draft.resource).decode()
    return (
        body,
        draft.status,
        draft.filter,
        draft.channel,
        draft.endpoint,
        draft.heartbeat_period,
        draft.end_at,
        restart,
        restart,
        restart,
        pk,
    )


def finish_params(subscription_id: str, owner: str, outcome: DeliveryOutcome) -> tuple[Any, ...]:
    return (
        outcome.from_version,
        outcome.status,
        outcome.delivered_through,
        outcome.delivered_through,
        outcome.failing_since,
        outcome.next_attempt,
        outcome.last_sent,
        outcome.error,
        subscription_id,
        owner,
    )


# --- the outbox ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Watch:
    """The listening subscriptions a write checks its task against: `sql` (then the task's
    pk) answers one 0/1 column per subscription, in `pks` order."""

    pks: tuple[int, ...]
    sql: str
    params: tuple[Any, ...]


def _clause(text: str, d: Dialect) -> tuple[str, list[Any]] | None:
    """A stored filter's WHERE condition, or None if it no longer parses (it matches
    nothing; filters are checked when a subscription is written, so only a stored filter
    this version of caretask reads differently gets here)."""
    try:
        query = parse_filter(text)
    except DomainError:
        log.warning("a stored subscription filter no longer parses; it matches nothing")
        return None
    sql, params = where(query, d)
    return sql.removeprefix(" WHERE ") or d.true, params


@lru_cache(maxsize=64)
def watch(rows: tuple[tuple[int, str], ...], d: Dialect) -> Watch | None:
    """The Watch for the listening subscriptions (pk, filter), None for none."""
    if not rows:
        return None
    parts, params = [], []
    for _, text in rows:
        clause = _clause(text, d)
        if clause is None:
            parts.append("0")
            continue
        parts.append(f"CASE WHEN {clause[0]} THEN 1 ELSE 0 END")
        params.extend(clause[1])
    sql = d.sql(f"SELECT {', '.join(parts)} FROM tasks t WHERE t.pk = ?")
    return Watch(tuple(pk for pk, _ in rows), sql, tuple(params))


@dataclass(slots=True)
class Outbox:
    """The events one write unit (a create, an update, a transaction) records."""

    watch: Watch | None
    # subscription pk -> its events in this transaction: (task_id, version_id, kind, occurred)
    pending: dict[int, list[tuple[str, int, str, int]]] = field(default_factory=dict)
    # PostgreSQL: the cursor of the `listening` query, sent and not yet read; `watch` is
    # made from it where a write first needs it, so that its answer comes back with the
    # write's own first read instead of in a round trip of its own
    unread: Any = None

    def matches(self, row: Sequence[Any] | None) -> tuple[int, ...]:
        """What one row of watch.sql says, as 0/1 per subscription (no row: all 0)."""
        assert self.watch is not None
        if row is None:
            return (0,) * len(self.watch.pks)
        return tuple(int(v) for v in row)

    def record(
        self,
        before: tuple[int, ...] | None,
        after: tuple[int, ...],
        task_id: str,
        version_id: int,
        kind: str,
        occurred: int,
    ) -> None:
        assert self.watch is not None
        for i, pk in enumerate(self.watch.pks):
            if after[i] or (before is not None and before[i]):
                self.pending.setdefault(pk, []).append((task_id, version_id, kind, occurred))

    def columns(self, lasts: Sequence[tuple[int, int]]) -> list[list[Any]]:
        """insert_events' arrays (one per column) for the subscriptions' newest numbers
        (pk, last): every event of this write unit."""
        rows = [row for pk, last in lasts for row in self.numbered(pk, last)]
        return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 6

    def numbered(self, pk: int, last: int) -> list[tuple[Any, ...]]:
        """insert_event rows for subscription `pk` whose newest number is now `last`."""
        events = self.pending[pk]
        first = last - len(events) + 1
        return [(pk, first + i, *event) for i, event in enumerate(events)]


def kind(version_id: int, status: str | None) -> str:
    """An event's kind: a task's first version is its creation, a tombstone (status '',
    storage.columns.ALIVE) its deletion."""
    if status == "":
        return "delete"
    return "create" if version_id == 1 else "update"
