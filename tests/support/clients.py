"""Helpers for tests that talk to a server through an HTTP client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.seed import seed_task


def create_task(api: httpx.Client, body: dict[str, Any]) -> str:
    """Create a task and return its id (from the Location header)."""
    response = api.post("/Task", json=body)
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def within_client_cache_time(request: Callable[[], httpx.Response]) -> httpx.Response:
    """A server keeps a client's row for CARETASK_CLIENT_CACHE_SECONDS (1 s by default), so
    a revocation shows within that: the first 401, else the last response after 2.5 s."""
    deadline = time.monotonic() + 2.5
    while True:
        response = request()
        if response.status_code == 401 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def task_for(api: httpx.Client, patient: str, **changes: Any) -> str:
    """Create the seed's task for `patient`, with elements replaced as seed_task does; its id."""
    return create_task(api, seed_task(for_={"reference": f"Patient/{patient}"}, **changes))
