"""The outbox and the subscription records (storage.subscriptions_sql), on a real database of
each engine, in-process: a task write records one event per subscription whose filter its
task matched before or after it, in that write's transaction, numbered without gaps in
commit order; delivery leases a subscription to one owner at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from caretask.domain import task_rules
from caretask.domain.dates import now_instant
from caretask.service.tasks import _tombstone, build_version
from caretask.storage import open_storage, schema
from caretask.storage.base import (
    DeliveryOutcome,
    Insert,
    StaleVersion,
    Storage,
    StoredTask,
    SubscriptionDraft,
)
from caretask.storage.urls import DatabaseURL
from tests.support.databases import engine_database
from tests.support.seed import SEED_CREATE, new_patient

SECOND = 1_000_000


@pytest.fixture
def database(engine: str, tmp_path: Path) -> Iterator[str]:
    with engine_database(engine, tmp_path) as url:
        schema.migrate(DatabaseURL.parse(url))
        yield url


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Storage]:
    storage = open_storage(DatabaseURL.parse(url))
    try:
        yield storage
    finally:
        await storage.close()


def run(factory: Callable[[], Any]) -> Any:
    return asyncio.run(factory())


def _draft(filter_: str, status: str = "active", channel: str = "rest-hook") -> SubscriptionDraft:
    return SubscriptionDraft(
        resource={"resourceType": "Subscription", "status": status},
        status=status,
        filter=filter_,
        channel=channel,
        endpoint="http://127.0.0.1:9/hook" if channel == "rest-hook" else "",
        heartbeat_period=None,
    )


def _body(patient: str, **changes: Any) -> dict[str, Any]:
    return task_rules.validate(
        {**SEED_CREATE, "for": {"reference": f"Patient/{patient}"}, **changes}
    )


async def _create(storage: Storage, patient: str, **changes: Any) -> str:
    task_id = task_rules.new_id()
    body = _body(patient, **changes)

    def build() -> Any:
        now, now_us = now_instant()
        return build_version(body, task_id=task_id, version_id=1, now=now, last_updated=now_us)

    await storage.create_task(task_id, build)
    return task_id


async def _update(storage: Storage, task_id: str, patient: str, **changes: Any) -> None:
    body = _body(patient, **changes)

    def build(current: StoredTask) -> Any:
        now, now_us = now_instant()
        return build_version(
            body,
            task_id=task_id,
            version_id=current.version_id + 1,
            now=now,
            last_updated=now_us,
            previous=current.resource,
        )

    await storage.update_task(task_id, build)


async def _events(storage: Storage, subscription_id: str) -> list[tuple[int, str, int, str]]:
    events = await storage.subscription_events(subscription_id, 0, None, 1000, False)
    return [(e.number, e.task_id, e.version_id, e.kind) for e in events]


def test_a_create_matching_the_filter_is_event_one_of_its_subscription(database: str) -> None:
    patient, other = new_patient(), new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("mine", _draft(f"patient={patient}"), "s", 1)
            await storage.create_subscription("theirs", _draft(f"patient={other}"), "s", 1)
            task_id = await _create(storage, patient)
            assert await _events(storage, "mine") == [(1, task_id, 1, "create")]
            assert await _events(storage, "theirs") == []
            stored = await storage.read_subscription("mine")
            assert stored is not None and stored.events_since_start == 1

    run(main)


def test_a_task_leaving_the_filter_is_notified_and_then_no_longer(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription(
                "open", _draft(f"patient={patient}&status=requested"), "s", 1
            )
            task_id = await _create(storage, patient)
            await _update(storage, task_id, patient, status="completed")  # leaves
            await _update(storage, task_id, patient, status="cancelled")  # already out
            assert await _events(storage, "open") == [
                (1, task_id, 1, "create"),
                (2, task_id, 2, "update"),
            ]

    run(main)


def test_a_delete_of_a_matching_task_is_a_delete_event(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("all", _draft(f"patient={patient}"), "s", 1)
            task_id = await _create(storage, patient)
            await storage.update_task(task_id, lambda current: _tombstone(current))
            assert await _events(storage, "all") == [
                (1, task_id, 1, "create"),
                (2, task_id, 2, "delete"),
            ]

    run(main)


def test_an_off_subscription_records_nothing(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("quiet", _draft("", status="off"), "s", 1)
            await _create(storage, patient)
            assert await _events(storage, "quiet") == []

    run(main)


def test_an_empty_filter_matches_every_task(database: str) -> None:
    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("everything", _draft(""), "s", 1)
            first = await _create(storage, new_patient())
            second = await _create(storage, new_patient())
            assert [e[1] for e in await _events(storage, "everything")] == [first, second]

    run(main)


def test_concurrent_writers_get_contiguous_event_numbers(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("busy", _draft(f"patient={patient}"), "s", 1)
            ids = await asyncio.gather(*(_create(storage, patient) for _ in range(40)))
            events = await _events(storage, "busy")
            assert [e[0] for e in events] == list(range(1, 41))
            assert sorted(e[1] for e in events) == sorted(ids)

    run(main)


def test_a_transaction_records_each_of_its_writes_in_order(database: str) -> None:
    patient = new_patient()
    ids = [task_rules.new_id() for _ in range(3)]

    def program():  # type: ignore[no-untyped-def]
        for task_id in ids:
            now, now_us = now_instant()
            new = build_version(
                _body(patient), task_id=task_id, version_id=1, now=now, last_updated=now_us
            )
            yield Insert(task_id, new)

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("batch", _draft(f"patient={patient}"), "s", 1)
            await storage.transact(program)
            assert [(e[0], e[1]) for e in await _events(storage, "batch")] == [
                (1, ids[0]),
                (2, ids[1]),
                (3, ids[2]),
            ]

    run(main)


def test_a_write_that_fails_records_no_event(database: str) -> None:
    patient = new_patient()

    def program():  # type: ignore[no-untyped-def]
        now, now_us = now_instant()
        task_id = task_rules.new_id()
        new = build_version(
            _body(patient), task_id=task_id, version_id=1, now=now, last_updated=now_us
        )
        yield Insert(task_id, new)
        raise LookupError("the program gives up")

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("none", _draft(f"patient={patient}"), "s", 1)
            with pytest.raises(LookupError):
                await storage.transact(program)
            assert await _events(storage, "none") == []
            stored = await storage.read_subscription("none")
            assert stored is not None and stored.events_since_start == 0

    run(main)


def test_events_carry_the_task_version_that_triggered_them(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("full", _draft(f"patient={patient}"), "s", 1)
            task_id = await _create(storage, patient, description="first")
            await _update(storage, task_id, patient, description="second")
            events = await storage.subscription_events("full", 0, None, 10, True)
            assert [(e.version_id, e.resource and e.resource["description"]) for e in events] == [
                (1, "first"),
                (2, "second"),
            ]
            assert [
                e.number for e in await storage.subscription_events("full", 1, 2, 10, False)
            ] == [2]

    run(main)


def test_the_callback_hears_of_a_write_that_recorded_events(database: str) -> None:
    patient = new_patient()

    async def main() -> tuple[list[str], list[str]]:
        heard: list[str] = []
        async with opened(database) as storage:
            storage.on_events(lambda: heard.append("events"))
            await asyncio.sleep(0.3)  # PostgreSQL's listener starts (and calls it once)
            heard.clear()
            await _create(storage, patient)  # no subscription yet
            await asyncio.sleep(0.3)
            before = list(heard)
            await storage.create_subscription("loud", _draft(f"patient={patient}"), "s", 1)
            await _create(storage, patient)
            return before, heard

    before, after = run(main)
    assert before == [] and after[:1] == ["events"]


def test_a_subscription_is_leased_to_one_owner_at_a_time(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("hook", _draft(f"patient={patient}"), "s", 1)
            await _create(storage, patient)
            now = now_instant()[1]
            first = await storage.claim_deliveries("a", now, 30 * SECOND, 10)
            second = await storage.claim_deliveries("b", now, 30 * SECOND, 10)
            assert [s.id for s in first] == ["hook"] and second == []
            outcome = DeliveryOutcome("active", 1, None, 0, now, None, from_version=1)
            assert not await storage.finish_delivery("hook", "b", outcome)
            assert await storage.finish_delivery("hook", "a", outcome)
            assert await storage.claim_deliveries("b", now, 30 * SECOND, 10) == []  # nothing due
            stored = await storage.read_subscription("hook")
            assert stored is not None and stored.delivered_through == 1

    run(main)


def test_an_expired_lease_can_be_claimed_again(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("hook", _draft(f"patient={patient}"), "s", 1)
            await _create(storage, patient)
            now = now_instant()[1]
            assert await storage.claim_deliveries("crashed", now, SECOND, 10)
            later = await storage.claim_deliveries("b", now + 2 * SECOND, SECOND, 10)
            assert [s.id for s in later] == ["hook"]

    run(main)


def test_a_requested_subscription_is_due_for_its_handshake(database: str) -> None:
    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("new", _draft("", status="requested"), "s", 1)
            await storage.create_subscription("ws", _draft("", channel="websocket"), "s", 1)
            claimed = await storage.claim_deliveries("a", now_instant()[1], SECOND, 10)
            assert [s.id for s in claimed] == ["new"]

    run(main)


def test_delivered_through_never_goes_back(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("hook", _draft(f"patient={patient}"), "s", 1)
            await _create(storage, patient)
            await _create(storage, patient)
            now = now_instant()[1]
            await storage.claim_deliveries("a", now, SECOND, 10)
            await storage.finish_delivery(
                "hook", "a", DeliveryOutcome("active", 2, None, 0, now, None, 1)
            )
            await storage.claim_deliveries("a", now + 10 * SECOND, SECOND, 10)  # a heartbeat, say
            await storage.finish_delivery(
                "hook", "a", DeliveryOutcome("active", 1, None, 0, now, None, 1)
            )
            stored = await storage.read_subscription("hook")
            assert stored is not None and stored.delivered_through == 2

    run(main)


def test_the_clients_off_during_a_delivery_stands(database: str) -> None:
    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("hook", _draft("", status="requested"), "s", 1)
            now = now_instant()[1]
            await storage.claim_deliveries("a", now, SECOND, 10)
            await storage.update_subscription("hook", _draft("", status="off"), 1)
            await storage.finish_delivery(
                "hook", "a", DeliveryOutcome("active", 0, None, 0, now, None, 1)
            )
            stored = await storage.read_subscription("hook")
            assert stored is not None and (stored.status, stored.version_id) == ("off", 2)

    run(main)


def test_an_update_with_a_stale_version_is_refused(database: str) -> None:
    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("hook", _draft(""), "s", 1)
            await storage.update_subscription("hook", _draft("status=ready"), 1)
            with pytest.raises(StaleVersion):
                await storage.update_subscription("hook", _draft(""), 1)

    run(main)


def test_search_by_endpoint_and_status(database: str) -> None:
    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("a", _draft(""), "s", 1)
            await storage.create_subscription("b", _draft("", status="off"), "s", 1)
            await storage.create_subscription("c", _draft("", channel="websocket"), "s", 1)
            total, page = await storage.search_subscriptions("http://127.0.0.1:9/hook", [], 10, 0)
            assert (total, [s.id for s in page]) == (2, ["a", "b"])
            total, page = await storage.search_subscriptions(None, ["active"], 10, 0)
            assert (total, [s.id for s in page]) == (2, ["a", "c"])
            total, page = await storage.search_subscriptions(None, [], 1, 1)
            assert (total, [s.id for s in page]) == (3, ["b"])

    run(main)


def test_deleting_a_subscription_deletes_its_events(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("gone", _draft(f"patient={patient}"), "s", 1)
            await _create(storage, patient)
            assert await storage.delete_subscription("gone")
            assert not await storage.delete_subscription("gone")
            assert await storage.read_subscription("gone") is None
            assert await storage.subscription_events("gone", 0, None, 10, False) == []
            await _create(storage, patient)  # writes go on without it

    run(main)


def test_purge_deletes_events_older_than_the_retention(database: str) -> None:
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as storage:
            await storage.create_subscription("old", _draft(f"patient={patient}"), "s", 1)
            await _create(storage, patient)
            cut = now_instant()[1] + 1
            await asyncio.sleep(0.01)
            await _create(storage, patient)
            assert await storage.purge_events(cut) == 1
            assert [e[0] for e in await _events(storage, "old")] == [2]

    run(main)


def test_another_server_hears_of_events_on_postgresql(database: str, engine: str) -> None:
    if engine != "postgresql":
        pytest.skip("servers share events through PostgreSQL's NOTIFY; SQLite's share a file")
    patient = new_patient()

    async def main() -> None:
        async with opened(database) as writer, opened(database) as other:
            heard = asyncio.Event()
            other.on_events(heard.set)
            await asyncio.sleep(0.5)  # it listens
            heard.clear()
            await writer.create_subscription("hook", _draft(f"patient={patient}"), "s", 1)
            await _create(writer, patient)
            await asyncio.wait_for(heard.wait(), 5)

    run(main)
