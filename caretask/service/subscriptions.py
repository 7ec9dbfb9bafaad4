"""The one way anything reads or writes Subscriptions: create, read, update, delete, search,
$status, $events and websocket binding tokens. The endpoint of a rest-hook channel is
checked here (the operator's allowlist, or public addresses only), as it needs DNS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from typing import Any

from caretask.domain import notifications, subscriptions
from caretask.domain.dates import instant, now_instant, parse_range
from caretask.domain.errors import InvalidRequest, NotFound, VersionConflict
from caretask.domain.etag import etag
from caretask.domain.notifications import Event
from caretask.domain.references import ID_PATTERN
from caretask.domain.subscriptions import Checked, EventRange, SubscriptionSearch
from caretask.domain.task_rules import new_id
from caretask.service.tasks import BodyLimits, read_json
from caretask.storage.base import (
    StaleVersion,
    Storage,
    StoredSubscription,
    SubscriptionDraft,
    SubscriptionEvent,
    TaskNotFound,
)

# $events answers at most this many events at a time (the client pages on by number)
MAX_REPLAY = 1000


def not_found(subscription_id: str) -> NotFound:
    return NotFound.single("not-found", f"Unknown Subscription resource '{subscription_id[:64]}'")


def _end_at(end: object) -> int | None:
    """A Subscription's `end` (an instant, validated with the resource) in us."""
    if not isinstance(end, str):
        return None
    found = parse_range(end)
    return found[0] if found else None


def event_view(event: SubscriptionEvent) -> Event:
    resource = event.resource
    if resource is not None and event.kind == "delete":
        resource = None
    return Event(
        event.number,
        event.task_id,
        event.version_id,
        event.kind,
        instant(event.occurred),
        resource,
    )


class SubscriptionService:
    def __init__(
        self,
        storage: Storage,
        limits: BodyLimits,
        endpoints: Sequence[str],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.storage = storage
        self.limits = limits
        self.endpoints = tuple(endpoints)
        self.wake = wake  # delivery: a subscription has work now (a handshake)

    # --- writes ---------------------------------------------------------------------------

    async def _checked(self, raw: bytes) -> Checked:
        checked = subscriptions.check(
            read_json(raw, self.limits, "Subscription"), self.limits.max_depth
        )
        if checked.channel.type == "rest-hook" and checked.status != "off":
            await self._check_endpoint(checked.channel.endpoint)
        return checked

    async def _check_endpoint(self, url: str) -> None:
        """The endpoint must start with a prefix the operator allowed, or, with none allowed,
        be https:// on a host all of whose addresses are public: a subscription must not
        make the server call its own network's services."""
        if self.endpoints:
            if not subscriptions.allowed_by_prefix(url, self.endpoints):
                raise subscriptions.refused_endpoint(
                    url, "it is not under CARETASK_SUBSCRIPTION_ENDPOINTS"
                )
            return
        host = subscriptions.https_host(url)
        if host is None:
            raise subscriptions.refused_endpoint(url, "only https:// URLs are allowed")
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except OSError:
            raise subscriptions.refused_endpoint(url, "its host does not resolve") from None
        addresses = {str(info[4][0]) for info in found}
        if not addresses or not all(subscriptions.is_public(a) for a in addresses):
            raise subscriptions.refused_endpoint(url, "its host has a non-public address")

    @staticmethod
    def _draft(
        checked: Checked,
        subscription_id: str,
        version_id: int,
        status: str,
        owner: str | None = None,
    ) -> SubscriptionDraft:
        now, _ = now_instant()
        resource = subscriptions.stamp(checked.resource, subscription_id, version_id, now)
        resource["status"] = status
        channel = checked.channel
        return SubscriptionDraft(
            resource=resource,
            status=status,
            filter=checked.filter,
            channel=channel.type,
            endpoint=channel.endpoint,
            heartbeat_period=channel.heartbeat,
            owner=owner,
            end_at=_end_at(resource.get("end")),
        )

    async def create(self, raw: bytes, owner: str | None = None) -> tuple[StoredSubscription, str]:
        """The new Subscription, and its signing secret (shown to the client once); `owner`:
        who creates it (Caller.owner)."""
        checked = await self._checked(raw)
        subscription_id = new_id()
        status = subscriptions.status_after_write(
            checked.status, checked.channel, None, None, None, checked.filter
        )
        secret = checked.secret or subscriptions.new_secret()
        _, now = now_instant()
        stored = await self.storage.create_subscription(
            subscription_id, self._draft(checked, subscription_id, 1, status, owner), secret, now
        )
        self.wake()
        return stored, secret

    async def read(self, subscription_id: str, only: str | None = None) -> StoredSubscription:
        """The Subscription; `only`: a person's owner key, who reaches only the
        Subscriptions they created (another's is not found, as if it did not exist)."""
        if not ID_PATTERN.fullmatch(subscription_id):
            raise not_found(subscription_id)
        stored = await self.storage.read_subscription(subscription_id)
        if stored is None or (only is not None and stored.owner != only):
            raise not_found(subscription_id)
        return stored

    async def update(
        self, subscription_id: str, raw: bytes, if_match: int | None, only: str | None = None
    ) -> StoredSubscription:
        checked = await self._checked(raw)
        given = checked.resource.get("id")
        if given is not None and given != subscription_id:
            raise InvalidRequest.single(
                "invalid", "the body's id must be the URL's", "Subscription.id"
            )
        for _ in range(5):  # another write came between the read and this one: again
            current = await self.read(subscription_id, only)
            if if_match is not None and if_match != current.version_id:
                raise VersionConflict.single(
                    "conflict",
                    f"If-Match {etag(if_match)} is not the current version "
                    f"({etag(current.version_id)})",
                )
            status = subscriptions.status_after_write(
                checked.status,
                checked.channel,
                current.status,
                subscriptions.channel_of(current.resource),
                current.filter,
                checked.filter,
            )
            draft = self._draft(checked, subscription_id, current.version_id + 1, status)
            try:
                stored = await self.storage.update_subscription(
                    subscription_id, draft, current.version_id
                )
            except TaskNotFound:
                raise not_found(subscription_id) from None
            except StaleVersion:
                if if_match is not None:
                    raise VersionConflict.single("conflict", "the Subscription changed") from None
                continue
            self.wake()
            return stored
        raise VersionConflict.single("conflict", "the Subscription is changing: try again")

    async def delete(self, subscription_id: str, only: str | None = None) -> None:
        if only is not None:
            await self.read(subscription_id, only)
        if not ID_PATTERN.fullmatch(subscription_id):
            raise not_found(subscription_id)
        if not await self.storage.delete_subscription(subscription_id):
            raise not_found(subscription_id)

    # --- reads ----------------------------------------------------------------------------

    async def search(
        self, search: SubscriptionSearch, only: str | None = None
    ) -> tuple[int, list[StoredSubscription]]:
        return await self.storage.search_subscriptions(
            search.url, search.statuses, search.count, search.offset, only
        )

    def status_of(self, stored: StoredSubscription) -> dict[str, Any]:
        content = subscriptions.channel_of(stored.resource).content
        return notifications.status_parameters(
            stored.id,
            stored.status,
            "query-status",
            stored.events_since_start,
            (),
            content,
            stored.error if stored.status == "error" else None,
        )

    async def statuses(
        self, ids: Sequence[str], statuses: Sequence[str], only: str | None = None
    ) -> list[dict[str, Any]]:
        """$status at the type level: the named Subscriptions (none named: every one), of
        the given statuses (none: any)."""
        if ids:
            # an id that is not one names none (and a NUL in it was PostgreSQL's 500)
            named = [i for i in dict.fromkeys(ids) if ID_PATTERN.fullmatch(i)]
            found = [await self.storage.read_subscription(i) for i in named]
            chosen = [s for s in found if s is not None and (only is None or s.owner == only)]
        else:
            _, chosen = await self.storage.search_subscriptions(None, (), 1000, 0, only)
        return [self.status_of(s) for s in chosen if not statuses or s.status in statuses]

    async def events(
        self, subscription_id: str, wanted: EventRange, base: str, only: str | None = None
    ) -> dict[str, Any]:
        """$events: the kept events numbered from `since` through `until`, as a query-event
        notification Bundle (at most MAX_REPLAY of them)."""
        stored = await self.read(subscription_id, only)
        content = wanted.content or subscriptions.channel_of(stored.resource).content
        found = await self.storage.subscription_events(
            subscription_id,
            wanted.since - 1,
            wanted.until,
            MAX_REPLAY,
            content == "full-resource",
        )
        now, _ = now_instant()
        return notifications.notification(
            base,
            stored.id,
            stored.status,
            "query-event",
            stored.events_since_start,
            [event_view(e) for e in found],
            content,
            now,
        )

    async def websocket_subscriptions(
        self, ids: Sequence[str], only: str | None = None
    ) -> list[StoredSubscription]:
        """$get-ws-binding-token: the named websocket Subscriptions (each must exist and be
        one)."""
        if not ids:
            raise InvalidRequest.single("required", "name the Subscription ids to bind (id)")
        chosen = []
        for subscription_id in dict.fromkeys(ids):
            stored = await self.read(subscription_id, only)
            if stored.channel != "websocket":
                raise InvalidRequest.single(
                    "invalid", f"Subscription/{subscription_id} is not a websocket subscription"
                )
            chosen.append(stored)
        return chosen
