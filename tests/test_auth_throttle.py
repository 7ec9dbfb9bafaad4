"""The failure throttle behind the token endpoint's 429 (auth.throttle), on a given clock."""

from __future__ import annotations

from caretask.auth.throttle import FailureThrottle


def test_a_key_may_fail_up_to_the_limit_before_it_must_wait() -> None:
    throttle = FailureThrottle(limit=3, window=60)
    for second in (0, 1, 2):
        assert throttle.retry_after("client", second) is None
        throttle.record("client", second)
    assert throttle.retry_after("client", 3) == 57


def test_the_wait_ends_when_the_oldest_failure_leaves_the_window() -> None:
    throttle = FailureThrottle(limit=2, window=10)
    throttle.record("client", 0)
    throttle.record("client", 4)
    assert throttle.retry_after("client", 9.5) == 0.5
    assert throttle.retry_after("client", 10) is None
    throttle.record("client", 10)  # 4 and 10 are in the window: blocked until 14
    assert throttle.retry_after("client", 11) == 3


def test_keys_are_counted_apart_and_cleared_alone() -> None:
    throttle = FailureThrottle(limit=1, window=60)
    throttle.record("a", 0)
    throttle.record("b", 0)
    throttle.clear("a")
    assert throttle.retry_after("a", 1) is None
    assert throttle.retry_after("b", 1) == 59


def test_the_throttle_holds_at_most_max_keys() -> None:
    throttle = FailureThrottle(limit=1, window=60, max_keys=2)
    for key in ("a", "b", "c"):
        throttle.record(key, 0)
    assert throttle.retry_after("a", 1) is None  # the oldest key was dropped
    assert throttle.retry_after("c", 1) == 59
