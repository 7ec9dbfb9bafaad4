"""Subscriptions across two `caretask serve` processes on one PostgreSQL database: their
dispatchers share the rest-hook work (a subscription leased to one server at a time), so
while both are up every event is delivered exactly once and in order, whichever server
wrote it; and a websocket client bound on one server hears of tasks written through the
other (PostgreSQL's NOTIFY)."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.sync.client import connect

from tests.support.databases import POSTGRES_URL, postgres_database
from tests.support.receiver import Received, Receiver, event_numbers, notification_type
from tests.support.seed import seed_task
from tests.support.server import Server
from tests.support.subscriptions import (
    LOOPBACK,
    SCOPE,
    events_since_start,
    focus_of,
    subscription_body,
)

pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="CARETASK_TEST_POSTGRES_URL is not set: no PostgreSQL to test against"
)
FHIR_JSON = {"Content-Type": "application/fhir+json"}
TASKS = 200
WRITERS_PER_SERVER = 3


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    with (
        postgres_database() as url,
        Server(url, tmp_path, env=LOOPBACK) as a,
        Server(url, tmp_path, env=LOOPBACK) as b,
    ):
        yield a, b


def _subscription_of(received: Received) -> str:
    status = received.json()["entry"][0]["resource"]
    return next(
        str(p["valueReference"]["reference"]).split("/", 1)[1]
        for p in status["parameter"]
        if p["name"] == "subscription"
    )


def _events_since_start(server: Server, token: str, subscription_id: str) -> int:
    with server.client(token) as client:
        return events_since_start(client, subscription_id)


def _numbers_by_subscription(received: list[Received]) -> dict[str, list[int]]:
    """Each subscription's event numbers, in the order they arrived."""
    out: dict[str, list[int]] = defaultdict(list)
    for notification in received:
        if notification_type(notification) == "event-notification":
            out[_subscription_of(notification)] += event_numbers(notification)
    return out


def _write(server: Server, token: str, bodies: list[dict[str, Any]], errors: list[str]) -> None:
    with server.client(token) as client:
        for body in bodies:
            response = client.post("/Task", json=body)
            if response.status_code != 201:
                errors.append(f"{server.port}: {response.status_code} {response.text}")


def test_two_servers_deliver_each_event_once_and_in_order(
    two_servers: tuple[Server, Server],
) -> None:
    a, b = two_servers
    token = a.token(SCOPE)
    patients = [f"Patient/{uuid.uuid4().hex}" for _ in range(2)]
    # three see every task, two see one patient's half each
    filters = ["status=requested"] * 3 + [f"patient={p}" for p in patients]
    with Receiver() as receiver:
        ids = []
        for number, search in enumerate(filters):
            server = (a, b)[number % 2]  # created through either server
            with server.client(token) as client:
                created = client.post(
                    "/Subscription", json=subscription_body(receiver.url, search), headers=FHIR_JSON
                )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        receiver.wait_for(
            lambda got: sum(notification_type(r) == "handshake" for r in got) == len(ids)
        )

        bodies = [seed_task(**{"for": {"reference": patients[i % 2]}}) for i in range(TASKS)]
        errors: list[str] = []
        writers = [
            threading.Thread(
                target=_write,
                args=(
                    (a, b)[i % 2],
                    token,
                    bodies[i :: 2 * WRITERS_PER_SERVER],
                    errors,
                ),
            )
            for i in range(2 * WRITERS_PER_SERVER)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(120)
        assert errors == []

        totals = {i: _events_since_start((a, b)[n % 2], token, i) for n, i in enumerate(ids)}
        assert list(totals.values()) == [TASKS] * 3 + [TASKS // 2] * 2

        def complete(got: list[Received]) -> bool:
            numbers = _numbers_by_subscription(got)
            return all(len(numbers[i]) >= totals[i] for i in ids)

        receiver.wait_for(complete, timeout=60)
        # a duplicate sent late would show by now
        threading.Event().wait(1.5)
        received = list(receiver.received)

    numbers = _numbers_by_subscription(received)
    assert set(numbers) == set(ids)
    senders: dict[str, int] = defaultdict(
        int
    )  # notifications by the server that sent them (its fullUrls)
    for notification in received:
        if notification_type(notification) == "event-notification":
            senders[notification.json()["entry"][1]["fullUrl"].split("/Task/")[0]] += 1
    print(f"\nevent-notifications sent by server: {dict(senders)}")
    for subscription_id in ids:
        # each number once, in order: arrival order is 1..N exactly
        assert numbers[subscription_id] == list(range(1, totals[subscription_id] + 1))
    handshakes = [r for r in received if notification_type(r) == "handshake"]
    assert sorted(_subscription_of(r) for r in handshakes) == sorted(ids)
    # the patient subscriptions saw their own patient's tasks: one in every two
    for subscription_id in ids[3:]:
        focus = {
            ref
            for r in received
            if notification_type(r) == "event-notification"
            and _subscription_of(r) == subscription_id
            for ref in focus_of(r.json())
        }
        assert len(focus) == TASKS // 2


def test_a_websocket_on_one_server_hears_of_writes_through_the_other(
    two_servers: tuple[Server, Server],
) -> None:
    a, b = two_servers
    token = a.token(SCOPE)
    with a.client(token) as client_a, b.client(token) as client_b:
        created = client_a.post(
            "/Subscription", json=subscription_body(None, channel="websocket"), headers=FHIR_JSON
        )
        assert created.status_code == 201, created.text
        subscription_id = created.json()["id"]
        # no body; its Content-Type even so, as the server answers 415 without one
        answer = client_b.post(
            f"/Subscription/{subscription_id}/$get-ws-binding-token", headers=FHIR_JSON
        )
        assert answer.status_code == 200, answer.text
        parameters = {p["name"]: p for p in answer.json()["parameter"]}
        binding = parameters["token"]["valueString"]
        socket_url = parameters["websocket-url"]["valueUrl"]
        assert socket_url == f"ws://127.0.0.1:{b.port}/ws"

        with connect(socket_url, open_timeout=10) as socket:
            socket.send(f"bind-with-token: {binding}")
            handshake = orjson.loads(socket.recv(timeout=10))
            status = handshake["entry"][0]["resource"]
            assert status["resourceType"] == "Parameters"
            kinds = [p["valueCode"] for p in status["parameter"] if p["name"] == "type"]
            assert kinds == ["handshake"]

            written = client_a.post("/Task", json=seed_task())
            assert written.status_code == 201, written.text
            task_id = written.headers["location"].rsplit("/", 1)[1]

            notification = orjson.loads(socket.recv(timeout=5))
            status = notification["entry"][0]["resource"]
            kinds = [p["valueCode"] for p in status["parameter"] if p["name"] == "type"]
            assert kinds == ["event-notification"]
            assert focus_of(notification) == [f"Task/{task_id}/_history/1"]
