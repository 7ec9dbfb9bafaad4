"""The rules of delivery that need no receiver (caretask.service.delivery): when the next
attempt is due after a success and after failures."""

from __future__ import annotations

import time

import pytest

from caretask.service.delivery import FIRST_RETRY, MAX_RETRY_DELAY, Dispatcher, retry_delay
from caretask.storage.base import StoredSubscription


def _subscription() -> StoredSubscription:
    return StoredSubscription(
        id="s",
        version_id=3,
        resource={},
        status="active",
        filter="",
        channel="rest-hook",
        endpoint="http://127.0.0.1:1/h",
        heartbeat_period=None,
        secret="x" * 32,
        events_since_start=9,
        delivered_through=4,
        failing_since=None,
        next_attempt=0,
        last_sent=None,
        error=None,
        created=0,
    )


def test_a_delivered_subscription_goes_behind_those_that_waited_longer() -> None:
    """Claims are taken in next_attempt order: a success stamps it with now, so that under
    steady writes every subscription gets its turn (0 starved all but the first by pk)."""
    before = time.time_ns() // 1000
    outcome = Dispatcher._outcome(_subscription(), "active", 9, before, None)
    assert outcome.next_attempt >= before
    assert outcome.from_version == 3
    assert outcome.delivered_through == 9


@pytest.mark.parametrize(
    ("failing_for", "low", "high"),
    [
        (0.0, FIRST_RETRY, FIRST_RETRY * 1.1),
        (8.0, 8.0, 8.8),
        (1e6, MAX_RETRY_DELAY, MAX_RETRY_DELAY * 1.1),
    ],
)
def test_retries_wait_about_as_long_as_the_receiver_has_been_failing(
    failing_for: float, low: float, high: float
) -> None:
    assert all(low <= retry_delay(failing_for) <= high for _ in range(50))
