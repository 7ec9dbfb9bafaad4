"""The bounds behind the token endpoint's 429 and 503 (auth.throttle): budgets on a given
clock, and the pool that runs secret checks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from caretask.auth.throttle import BoundedPool, Budget, Busy


def test_a_key_may_spend_its_limit_at_once_then_must_wait() -> None:
    budget = Budget(limit=3, window=60)
    for _ in range(3):
        assert budget.spend("address", 0) is None
    assert budget.spend("address", 0) == 20  # one earned back every window / limit seconds
    assert budget.retry_after("address", 15) == 5


def test_a_budget_is_earned_back_at_limit_per_window() -> None:
    budget = Budget(limit=2, window=10)
    budget.spend("address", 0)
    budget.spend("address", 0)
    assert budget.spend("address", 5) is None
    assert budget.spend("address", 5) == 5


def test_a_refund_gives_back_what_a_successful_check_spent() -> None:
    budget = Budget(limit=1, window=60)
    budget.spend("address", 0)
    budget.refund("address", 0)
    assert budget.spend("address", 0) is None


def test_recorded_failures_count_even_past_the_limit_but_never_below_zero() -> None:
    budget = Budget(limit=2, window=10)
    for _ in range(5):
        budget.record("pair", 0)
    assert budget.retry_after("pair", 0) == 5


def test_keys_are_counted_apart_and_cleared_alone() -> None:
    budget = Budget(limit=1, window=60)
    budget.record("a", 0)
    budget.record("b", 0)
    budget.clear("a")
    assert budget.retry_after("a", 1) is None
    assert budget.retry_after("b", 1) == 59


def test_a_key_whose_budget_is_full_again_is_not_kept() -> None:
    budget = Budget(limit=2, window=10)
    budget.spend("a", 0)
    budget.spend("b", 1)
    budget.refund("b", 1)
    assert len(budget) == 1
    budget.spend("c", 20)  # by now a has earned its budget back: forgotten
    assert len(budget) == 1
    assert budget.retry_after("a", 20) is None


def test_the_table_holds_at_most_max_keys_and_forgets_the_least_recently_used() -> None:
    budget = Budget(limit=1, window=60, max_keys=2)
    budget.record("a", 0)
    budget.record("b", 0)
    budget.record("a", 1)  # a is used again: b is now the least recently used
    budget.record("c", 2)
    assert len(budget) == 2
    assert budget.retry_after("b", 3) is None
    assert budget.retry_after("a", 3) is not None
    assert budget.retry_after("c", 3) is not None


def test_the_pool_refuses_at_once_past_its_threads_and_queue() -> None:
    release = threading.Event()

    async def scenario() -> list[object]:
        pool = BoundedPool(threads=1, queue=1)
        try:
            running = [asyncio.ensure_future(pool.run(release.wait, 5)) for _ in range(2)]
            await asyncio.sleep(0)
            with pytest.raises(Busy):
                await pool.run(release.wait, 5)
            release.set()
            done = await asyncio.gather(*running)
            await asyncio.sleep(0.01)  # the room comes back when the threads are done
            done.append(await pool.run(lambda: "again"))
            return done
        finally:
            pool.close()

    assert asyncio.run(scenario()) == [True, True, "again"]
