"""Subscription notifications survive SIGKILL: events are stored with the task write that
made them (the outbox) and delivered at least once, in order, without gaps. Writers stream
creates and If-Match updates of tasks a `status=requested` subscription watches (some
updates complete or cancel a task, so that it leaves the filter) while the server is killed
with SIGKILL at random moments and restarted on the same database and port; one receiver
keeps running throughout. Afterwards every acknowledged write is the focus of a delivered
event, the event numbers are 1..N without gaps, each number's first delivery came in
order, and a number is seen twice only when a notification was sent again.

CARETASK_CRASH_CYCLES sets the number of kill cycles (default 10)."""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.support.crash import kill_while_writing
from tests.support.receiver import Received, Receiver, event_numbers, notification_type
from tests.support.seed import SEED_CREATE
from tests.support.server import Server, free_port
from tests.support.subscriptions import (
    LOOPBACK,
    SCOPE,
    events_since_start,
    focus_of,
    subscription_body,
)

CYCLES = int(os.environ.get("CARETASK_CRASH_CYCLES", "10"))
FHIR_JSON = {"Content-Type": "application/fhir+json"}
# a killed server's delivery lease runs out after its timeout + 10 s (LOOPBACK: 2 s); then
# the restarted one sends what was left
SETTLE_SECONDS = 90


@dataclass
class Acknowledged:
    """The writes the server acknowledged, as (task id, version): all of them matched the
    filter before or after (a task that leaves it is not written again)."""

    writes: set[tuple[str, int]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # what a writer saw that it should not
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, task_id: str, version: int) -> None:
        with self.lock:
            self.writes.add((task_id, version))


def _writer(url: str, token: str, acked: Acknowledged, stop: threading.Event, seed: int) -> None:
    """Creates (status requested: in the filter) and If-Match updates of its own tasks: most
    keep the task requested, some complete or cancel it (out of the filter, notified as its
    previous version matched; the task is not written again). Until the server dies or
    `stop`."""
    rng = random.Random(seed)
    mine: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=5) as client:
        while not stop.is_set():
            try:
                if mine and rng.random() < 0.5:
                    task_id = rng.choice(list(mine))
                    version = mine[task_id]
                    leaving = rng.random() < 0.3
                    status = rng.choice(["completed", "cancelled"]) if leaving else "requested"
                    response = client.put(
                        f"/Task/{task_id}",
                        json={
                            **SEED_CREATE,
                            "id": task_id,
                            "status": status,
                            "description": f"update {seed}-{rng.getrandbits(40)}",
                        },
                        headers={"If-Match": f'W/"{version}"'},
                    )
                    if response.status_code != 200:  # a 412: an acknowledged version lost
                        acked.errors.append(f"update: {response.status_code} {response.text}")
                        return
                    acked.record(task_id, version + 1)
                    if leaving:
                        del mine[task_id]
                    else:
                        mine[task_id] = version + 1
                else:
                    response = client.post(
                        "/Task",
                        json={**SEED_CREATE, "description": f"create {seed}-{rng.getrandbits(40)}"},
                    )
                    if response.status_code != 201:
                        acked.errors.append(f"create: {response.status_code} {response.text}")
                        return
                    task_id = response.headers["location"].rsplit("/", 1)[1]
                    mine[task_id] = 1
                    acked.record(task_id, 1)
            except httpx.TransportError:  # the server was killed: unacknowledged, unknown
                return


def _numbers_seen(received: list[Received]) -> set[int]:
    notified = [r for r in received if notification_type(r) == "event-notification"]
    return {n for r in notified for n in event_numbers(r)}


@dataclass
class Delivered:
    """What the receiver got, checked notification by notification in arrival order."""

    focus: dict[int, str] = field(default_factory=dict)  # event number: its focus
    first_order: list[int] = field(default_factory=list)  # numbers by first arrival
    notifications: int = 0
    duplicates: int = 0  # numbers received again
    resent: int = 0  # notifications carrying a number received before


def _delivered(received: list[Received]) -> Delivered:
    out = Delivered()
    highest = 0
    for notification in received:
        if notification_type(notification) != "event-notification":
            continue
        out.notifications += 1
        numbers = event_numbers(notification)
        focus = focus_of(notification.json())
        assert numbers, "an event-notification without events"
        assert len(focus) == len(numbers)
        # a notification is a run of consecutive numbers, in order
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        # nothing skipped: it starts at most one past the highest number received so far
        assert numbers[0] <= highest + 1, (numbers, highest)
        again = [n for n in numbers if n <= highest]
        if again:
            out.resent += 1
            out.duplicates += len(again)
        for number, reference in zip(numbers, focus, strict=True):
            if number in out.focus:  # sent again: the same event
                assert out.focus[number] == reference, number
            else:
                out.focus[number] = reference
                out.first_order.append(number)
        highest = max(highest, numbers[-1])
    return out


@pytest.mark.slow
def test_every_acknowledged_write_is_notified_through_sigkills(
    fresh_database: str, tmp_path: Path
) -> None:
    acked = Acknowledged()
    rng = random.Random(20261201)
    port = free_port()
    kills = 0
    with Receiver() as receiver:
        server = Server(fresh_database, tmp_path, port=port, env=LOOPBACK).start()
        token = server.token(SCOPE)
        with server.client(token) as client:
            created = client.post(
                "/Subscription",
                json=subscription_body(receiver.url, "status=requested"),
                headers=FHIR_JSON,
            )
            assert created.status_code == 201, created.text
        subscription_id = created.json()["id"]
        receiver.wait_for(lambda got: any(notification_type(r) == "handshake" for r in got))

        for cycle in range(CYCLES):
            if cycle:
                server = Server(fresh_database, tmp_path, port=port, env=LOOPBACK).start()
            assert server.process is not None
            kill_while_writing(
                server,
                partial(_writer, token=token, acked=acked),
                cycle,
                rng,
            )
            kills += 1

        with Server(fresh_database, tmp_path, port=port, env=LOOPBACK) as server:
            with server.client(token) as client:
                total = events_since_start(client, subscription_id)
            wanted = set(range(1, total + 1))
            started = time.monotonic()
            received = receiver.wait_for(
                lambda got: wanted <= _numbers_seen(got), timeout=SETTLE_SECONDS
            )
            settled = time.monotonic() - started
            time.sleep(1)  # anything sent beyond N would show now
            received = list(receiver.received)
            with server.client(token) as client:
                assert events_since_start(client, subscription_id) == total  # nothing new

    delivered = _delivered(received)
    print(
        f"\n{kills} kills, {len(acked.writes)} writes acknowledged, {total} events, "
        f"{len(delivered.focus)} events delivered in {delivered.notifications} notifications, "
        f"{delivered.duplicates} duplicates seen (in {delivered.resent} notifications sent "
        f"again), settled {settled:.1f} s after the last restart"
    )
    assert acked.errors == []
    assert kills == CYCLES
    assert len(acked.writes) > CYCLES * 20  # the writers did get work done between kills
    # numbered 1..N without gaps, nothing beyond
    assert sorted(delivered.focus) == list(range(1, total + 1))
    # in order: each number's first delivery came after those of all smaller numbers
    assert delivered.first_order == sorted(delivered.first_order)
    # every acknowledged write was notified (some unacknowledged ones too: in flight at a kill)
    focused = set(delivered.focus.values())
    missing = [w for w in acked.writes if f"Task/{w[0]}/_history/{w[1]}" not in focused]
    assert missing == [], f"{len(missing)} acknowledged writes never notified: {missing[:5]}"
    assert total >= len(acked.writes)
    # one event per task version, and a task's versions numbered in commit order
    assert len(focused) == len(delivered.focus)
    by_task: dict[str, list[tuple[int, int]]] = {}
    for number, reference in delivered.focus.items():
        _, task_id, _, version = reference.split("/")
        by_task.setdefault(task_id, []).append((number, int(version)))
    for task_id, pairs in by_task.items():
        # every version of a task matched before or after: all notified, in version order
        versions = [v for _, v in sorted(pairs)]
        assert versions == list(range(1, len(versions) + 1)), task_id
