"""The audit trail at the edge: a record of every request to a FHIR endpoint (who, what,
when, from where, outcome), stored in batches.

A row per request written as its own transaction would turn every read into a write (a
commit and, on SQLite, an fsync). Records wait in memory instead and are stored together
every `interval` seconds or every `batch` records, so a crash loses at most the last
interval's records, never a task write. If the database refuses them, they are kept and
retried, up to `max_pending`; past that the oldest are dropped and counted in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caretask import metrics
from caretask.domain import audit
from caretask.domain.audit import AuditRecord
from caretask.service.bundles import EntryRecord
from caretask.storage.base import Storage

log = logging.getLogger("caretask.audit")


class AuditWriter:
    def __init__(
        self,
        storage: Storage,
        interval: float = 0.5,
        batch: int = 2_000,
        max_pending: int = 200_000,
    ) -> None:
        self._storage = storage
        self._interval = interval
        self._batch = batch
        self._pending: deque[AuditRecord] = deque(maxlen=max_pending)
        self._dropped = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def pending(self) -> int:
        return len(self._pending)

    def add(self, record: AuditRecord) -> None:
        if len(self._pending) == self._pending.maxlen:
            self._dropped += 1
            metrics.AUDIT_DROPPED.inc()
        self._pending.append(record)
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self._batch, len(self._pending)))]
            try:
                await self._storage.record_audit(batch)
            except Exception as error:  # the database is down: keep them for the next round
                room = (self._pending.maxlen or 0) - len(self._pending)
                if len(batch) > room:  # newer records came meanwhile: the oldest give way
                    self._dropped += len(batch) - room
                    metrics.AUDIT_DROPPED.inc(len(batch) - room)
                    batch = batch[len(batch) - room :]
                self._pending.extendleft(reversed(batch))
                log.warning(
                    "could not store %d audit records (%s); kept for retry",
                    len(self._pending),
                    type(error).__name__,
                )
                return
        if self._dropped:
            log.error("dropped %d audit records: the database refused them too long", self._dropped)
            self._dropped = 0

    async def close(self) -> None:
        """Store what is pending: a graceful shutdown loses no record."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


# What the access log and the trail say for a request whose client went away before it was
# answered (nginx's convention): not a 500, which is a server bug.
CLIENT_CLOSED = 499


# what a request was: its FHIR interaction (or login, or unknown), and the task id and
# version its path named
AuditName = tuple[str, str | None, int | None]
# reads an AuditName from a request's scope once it has been answered (http.routes.audit_name)
Namer = Callable[[Scope], AuditName]


class AuditTrail:
    """Records each request after its response has started. What it was comes from the route
        table (`name`), run after the router has put the route it reached in the scope. From the
        request's state: who (the client id a verified token named, http.auth, or a token request
        claimed, http.token_endpoint), the search parameters when the handler parsed a form body,
        and the task a handler read or wrote (its id and version, `audit_target`); a Bundle's
    handler renames the request (`audit_interaction`: batch, transaction) and adds a record of
    each entry (`audit_entries`)."""

    def __init__(
        self,
        app: ASGIApp,
        name: Namer,
        unaudited: frozenset[str],
        unaudited_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.name = name
        self.unaudited = unaudited
        # the board's pages: no FHIR interaction, nothing read or written
        self.unaudited_prefixes = unaudited_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.unaudited
            or scope["path"].startswith(self.unaudited_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        start: Message = {"status": 500}

        async def remember_start(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            await send(message)

        try:
            await self.app(scope, receive, remember_start)
        except ClientDisconnect:
            start = {"status": CLIENT_CLOSED}
            raise
        finally:
            opened = scope["app"].state.caretask.opened  # None before the lifespan ran
            if opened is not None:
                record = _record(scope, start, self.name(scope))
                opened.audit.add(record)
                for entry in (scope.get("state") or {}).get("audit_entries", ()):
                    opened.audit.add(_entry_record(record, entry))


def _record(scope: Scope, start: Message, name: AuditName) -> AuditRecord:
    method = scope["method"][:16]
    interaction, resource_id, version_id = name
    status = start["status"]
    state: dict[str, Any] = scope.get("state") or {}
    interaction = state.get("audit_interaction", interaction)  # a Bundle's: batch, transaction
    target = state.get("audit_target")
    if target is not None and 200 <= status < 400:
        resource_id = resource_id or target[0]
        version_id = version_id or target[1]
    query = state.get("audit_query")
    if query is None and scope["query_string"]:
        query = audit.redact_query(scope["query_string"].decode("latin-1"))
    client = scope.get("client")
    client_id = state.get("client_id")
    user, fhir_user = state.get("audit_user") or (None, None)
    return AuditRecord(
        time.time_ns() // 1000,
        audit.clean(client_id[:200]) if client_id else None,
        interaction,
        method,
        resource_id,
        version_id,
        query,
        client[0][:64] if client else None,
        status,
        user,
        fhir_user,
    )


def _entry_record(request: AuditRecord, entry: EntryRecord) -> AuditRecord:
    """The record of one entry of a batch or transaction, as of a request of its own by
    the same client, from the same address, at the same time."""
    query = audit.redact_query(entry.search) if entry.search else None
    return request._replace(
        interaction=entry.interaction,
        method=entry.method[:16],
        resource_id=entry.task_id,
        version_id=entry.version_id,
        query=query,
        status=entry.status,
    )
