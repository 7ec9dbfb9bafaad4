"""GET /metrics: the Prometheus text format (caretask.metrics), as CARETASK_METRICS says:
off (a 404, as if there were no such path), open, or only for a scraper that sends the
configured bearer token. Not audited: a scraper calls every few seconds.

And the sampler that keeps a worker's gauges current (pool use, the audit queue, the
subscription backlog), every few seconds and before each scrape this worker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac

from starlette.requests import Request
from starlette.responses import Response

from caretask import metrics
from caretask.config import METRICS_OFF, METRICS_OPEN
from caretask.http.errors import HttpProblem
from caretask.http.state import Opened, opened, settings
from caretask.storage.base import StorageUnavailable

SAMPLE_SECONDS = 5.0
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="caretask-metrics"'}


async def scrape(request: Request) -> Response:
    mode = settings(request).metrics
    if mode == METRICS_OFF:
        raise HttpProblem(404, "not-found", "metrics are off (CARETASK_METRICS)")
    if mode != METRICS_OPEN:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), mode.encode()
        ):
            raise HttpProblem.unauthenticated("the metrics token is missing or wrong", _CHALLENGE)
    await sample(opened(request))
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


async def sample(state: Opened) -> None:
    stats = state.storage.pool_stats()
    metrics.POOL_SIZE.set(stats.size)
    metrics.POOL_IN_USE.set(stats.in_use)
    metrics.POOL_WAITING.set(stats.waiting)
    metrics.AUDIT_QUEUE.set(state.audit.pending())
    with contextlib.suppress(StorageUnavailable):  # the rest is still worth showing
        metrics.SUBSCRIPTION_BACKLOG.set(await state.storage.subscription_backlog())


class Sampler:
    def __init__(self, state: Opened, interval: float = SAMPLE_SECONDS) -> None:
        self._state = state
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a sample missed is taken again
                await sample(self._state)
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
