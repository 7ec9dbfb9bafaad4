"""Delivering subscription notifications: rest-hook POSTs, and websocket clients bound to
subscriptions on this server.

Rest-hook: the dispatcher leases subscriptions that have work due (storage.claim_deliveries:
one server at a time per subscription, across every server on the database), sends one
notification each (a handshake, a batch of events in number order, or a heartbeat) and
records the outcome. A failure is retried with a delay that doubles with the time the
receiver has been failing, until CARETASK_SUBSCRIPTION_RETRY_SECONDS have passed; then
the subscription is `error`. A delivery that was sent but whose outcome was not recorded
(the server killed between) is sent again by whoever leases it next: at least once, the
duplicate recognisable by its event numbers.

Websocket: each server sends to the clients bound on it the events numbered after the
newest it sent them, whichever server wrote them (PostgreSQL's NOTIFY wakes it, else the
poll). Notification bodies carry PHI: they are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import orjson

from caretask import metrics
from caretask.domain import notifications, subscriptions
from caretask.domain.dates import now_instant
from caretask.service.subscriptions import event_view
from caretask.storage.base import DeliveryOutcome, Storage, StoredSubscription

log = logging.getLogger("caretask.delivery")
_US = 1_000_000
FIRST_RETRY = 1.0  # s: the first retry's delay; each later one waits about as long as
MAX_RETRY_DELAY = 300.0  # the receiver has been failing, up to this
PURGE_EVERY = 600.0  # s between purges of events past their retention


@dataclass(frozen=True)
class DeliverySettings:
    retry_seconds: int
    retention: int
    timeout: float
    concurrency: int
    poll_seconds: float


def _now_us() -> int:
    return time.time_ns() // 1000


def retry_delay(failing_for: float) -> float:
    """Seconds until the next attempt after a receiver has failed for `failing_for` s:
    about as long again (so the delays double), with a little jitter so that many
    subscriptions on one broken receiver do not retry in step."""
    delay = min(max(failing_for, FIRST_RETRY), MAX_RETRY_DELAY)
    return delay * random.uniform(1.0, 1.1)


class Background:
    """A loop of the server's own, run from start() to close(): a round of work each time
    it is woken, and at least every `poll` seconds (what another server wrote on SQLite
    wakes nobody here)."""

    def __init__(self, poll: float) -> None:
        self.poll = poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: again at the next poll
                log.warning("%s round failed: %s", type(self).__name__, type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()

    async def _round(self) -> None:
        raise NotImplementedError


class Dispatcher(Background):
    """The rest-hook sender of one server process."""

    def __init__(
        self, storage: Storage, settings: DeliverySettings, base: Callable[[], str]
    ) -> None:
        super().__init__(settings.poll_seconds)
        self.storage = storage
        self.settings = settings
        self.base = base  # the server's base URL, for the notifications' fullUrls
        self.owner = f"{uuid.uuid4()}"
        self._running: set[asyncio.Task[None]] = set()
        self._client = httpx.AsyncClient(
            follow_redirects=False,  # a redirect could point anywhere: not followed
            limits=httpx.Limits(max_connections=settings.concurrency * 2),
            trust_env=False,
        )
        self._last_purge = 0.0
        self.extra_wake: list[Callable[[], None]] = []

    def wake(self) -> None:
        super().wake()
        for callback in self.extra_wake:
            callback()

    async def close(self) -> None:
        await super().close()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self._client.aclose()

    @property
    def lease(self) -> int:
        """How long a claim holds, us: past one notification's timeout, so that a claim
        runs out only when its server is gone."""
        return int((self.settings.timeout + 10) * _US)

    async def _round(self) -> None:
        await self.storage.expire_subscriptions(_now_us())  # an `end` passed: off
        if time.monotonic() - self._last_purge > PURGE_EVERY:
            self._last_purge = time.monotonic()
            await self.storage.purge_events(_now_us() - self.settings.retention * _US)
        while True:
            free = self.settings.concurrency - len(self._running)
            if free <= 0:
                return
            claimed = await self.storage.claim_deliveries(self.owner, _now_us(), self.lease, free)
            for subscription in claimed:
                task = asyncio.create_task(self._deliver(subscription))
                self._running.add(task)
                task.add_done_callback(self._done)
            if len(claimed) < free:
                return

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a delivery failed: %s", type(task.exception()).__name__)
        self._wake.set()  # a slot is free, and its subscription may have more work

    async def _deliver(self, sub: StoredSubscription) -> None:
        channel = subscriptions.channel_of(sub.resource)
        now = _now_us()
        delivered = sub.delivered_through
        events = []
        occurred: list[int] = []  # the events' commit times, us
        if sub.status == "requested":
            kind = "handshake"
        elif sub.status == "active" and sub.events_since_start > sub.delivered_through:
            kind = "event-notification"
            found = await self.storage.subscription_events(
                sub.id,
                sub.delivered_through,
                None,
                channel.max_count,
                channel.content == "full-resource",
            )
            events = [event_view(e) for e in found]
            occurred = [e.occurred for e in found]
            # the events past retention are gone: go on from what is kept
            delivered = found[-1].number if found else sub.events_since_start
        else:
            kind = "heartbeat"
        if kind == "event-notification" and not events:
            outcome = self._outcome(sub, sub.status, delivered, sub.last_sent, None)
            await self.storage.finish_delivery(sub.id, self.owner, outcome)
            return
        instant, _ = now_instant()
        bundle = notifications.notification(
            self.base(),
            sub.id,
            sub.status,
            kind,
            sub.events_since_start,
            events,
            channel.content,
            instant,
            sub.error if sub.status == "error" else None,
        )
        body = orjson.dumps(bundle)
        headers = {
            **dict(channel.headers),
            "Content-Type": channel.payload,
            notifications.SIGNATURE_HEADER: notifications.signature(
                sub.secret, body, int(time.time())
            ),
        }
        timeout = min(channel.timeout or self.settings.timeout, self.settings.timeout)
        problem = await self._post(channel.endpoint, body, headers, timeout)
        metrics.NOTIFICATIONS.labels(kind, "failed" if problem else "delivered").inc()
        if problem is None:
            received = time.time()
            for at in occurred:
                metrics.DELIVERY_LAG.observe(max(0.0, received - at / _US))
            status = "active" if sub.status == "requested" else sub.status
            through = delivered if kind == "event-notification" else sub.delivered_through
            outcome = self._outcome(sub, status, through, now, None)
        else:
            outcome = self._failed(sub, now, problem)
        await self.storage.finish_delivery(sub.id, self.owner, outcome)

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> str | None:
        """None if the receiver took the notification (a 2xx), else what went wrong, in
        words that carry no part of the body."""
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.post(url, content=body, headers=headers)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except httpx.HTTPError as exc:
            return f"could not deliver ({type(exc).__name__})"
        if 200 <= response.status_code < 300:
            return None
        return f"the endpoint answered {response.status_code}"

    @staticmethod
    def _outcome(
        sub: StoredSubscription, status: str, through: int, sent: int | None, error: str | None
    ) -> DeliveryOutcome:
        return DeliveryOutcome(
            status=status,
            delivered_through=through,
            failing_since=None if error is None else sub.failing_since,
            # claims go in next_attempt order: a subscription just served waits behind
            # every one whose work has waited longer (with 0, the first ones by pk were
            # served again and again under steady writes, and the rest starved)
            next_attempt=_now_us(),
            last_sent=sent,
            error=error,
            from_version=sub.version_id,
        )

    def _failed(self, sub: StoredSubscription, now: int, problem: str) -> DeliveryOutcome:
        since = sub.failing_since if sub.failing_since is not None else now
        failing_for = (now - since) / _US
        status = sub.status
        if failing_for >= self.settings.retry_seconds:
            status = "error"
        log.info("subscription %s: notification failed: %s", sub.id, problem)
        return DeliveryOutcome(
            status=status,
            delivered_through=sub.delivered_through,
            failing_since=since,
            next_attempt=now + int(retry_delay(failing_for) * _US),
            last_sent=now if sub.status == "error" else sub.last_sent,
            error=problem,
            from_version=sub.version_id,
        )


# --- websockets ---------------------------------------------------------------------------

Send = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class Binding:
    """One websocket client bound to one subscription: what it was last sent."""

    send: Send
    last: int  # the newest event number sent to it
    heartbeat: int | None
    content: str
    sent_at: float = field(default_factory=time.monotonic)


class WebsocketHub(Background):
    """The websocket clients bound on this server, by subscription id."""

    def __init__(self, storage: Storage, base: Callable[[], str], poll_seconds: float) -> None:
        super().__init__(poll_seconds)
        self.storage = storage
        self.base = base
        self.bindings: dict[str, set[Binding]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def bind(self, sub: StoredSubscription, send: Send) -> Binding:
        """Bind a client: the handshake now, the events written from now on."""
        channel = subscriptions.channel_of(sub.resource)
        binding = Binding(send, sub.events_since_start, channel.heartbeat, channel.content)
        async with self._lock(sub.id):
            await send(self._bundle(sub, "handshake", [], binding.content))
            self.bindings.setdefault(sub.id, set()).add(binding)
        self.wake()
        return binding

    def unbind(self, subscription_id: str, binding: Binding) -> None:
        found = self.bindings.get(subscription_id)
        if found is not None:
            found.discard(binding)
            if not found:
                del self.bindings[subscription_id]

    def _lock(self, subscription_id: str) -> asyncio.Lock:
        return self._locks.setdefault(subscription_id, asyncio.Lock())

    def _bundle(
        self, sub: StoredSubscription, kind: str, events: list[notifications.Event], content: str
    ) -> str:
        now, _ = now_instant()
        bundle = notifications.notification(
            self.base(), sub.id, sub.status, kind, sub.events_since_start, events, content, now
        )
        return orjson.dumps(bundle).decode()

    async def _round(self) -> None:
        for subscription_id in list(self.bindings):
            try:
                await self._push(subscription_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("websocket delivery failed: %s", type(exc).__name__)

    async def _push(self, subscription_id: str) -> None:
        async with self._lock(subscription_id):
            bound = list(self.bindings.get(subscription_id, ()))
            if not bound:
                return
            sub = await self.storage.read_subscription(subscription_id)
            if sub is None:
                return
            oldest = min(b.last for b in bound)
            full = any(b.content == "full-resource" for b in bound)
            while oldest < sub.events_since_start:
                found = await self.storage.subscription_events(
                    sub.id, oldest, None, subscriptions.MAX_EVENTS, full
                )
                if not found:
                    break
                events = [event_view(e) for e in found]
                for binding in bound:
                    mine = [e for e in events if e.number > binding.last]
                    if mine:
                        await self._send(
                            subscription_id,
                            binding,
                            self._bundle(sub, "event-notification", mine, binding.content),
                        )
                        binding.last = mine[-1].number
                oldest = found[-1].number
            now = time.monotonic()
            for binding in bound:
                if binding.heartbeat and now - binding.sent_at >= binding.heartbeat:
                    await self._send(
                        subscription_id,
                        binding,
                        self._bundle(sub, "heartbeat", [], binding.content),
                    )

    async def _send(self, subscription_id: str, binding: Binding, text: str) -> None:
        try:
            await binding.send(text)
            binding.sent_at = time.monotonic()
        except Exception:  # the client went away: it binds again if it wants more
            self.unbind(subscription_id, binding)
