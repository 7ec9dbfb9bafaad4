"""The ASGI application: routes, lifespan (storage and signing key), error mapping."""

from __future__ import annotations

import gc
import hmac
import logging
import os
import re
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caretask import logs, metrics
from caretask.auth.throttle import BoundedPool, Budget
from caretask.auth.tokens import VerifiedTokens
from caretask.config import METRICS_OFF, Settings
from caretask.domain import audit
from caretask.domain.errors import DomainError
from caretask.http import errors, routes
from caretask.http.audit import CLIENT_CLOSED, AuditTrail, AuditWriter, Namer
from caretask.http.auth import ClientRows, UserRows
from caretask.http.cors import Cors
from caretask.http.limits import RequestLimits
from caretask.http.metrics import Sampler
from caretask.http.responses import PrettyJson
from caretask.http.routing import SegmentRouter
from caretask.http.state import AppState, Opened
from caretask.http.timeouts import BodyTimeout
from caretask.http.urls import AllowedHosts
from caretask.service import BundleService, TaskService
from caretask.service.delivery import DeliverySettings, Dispatcher, WebsocketHub
from caretask.service.subscriptions import SubscriptionService
from caretask.storage import open_storage
from caretask.storage.base import StorageUnavailable
from caretask.storage.urls import DatabaseURL

access_log = logging.getLogger("caretask.access")
log = logging.getLogger("caretask.http")


_SEGMENT = re.compile(r"[A-Za-z0-9._\-]{1,64}")


def loggable_path(path: str) -> str:
    """The path with every segment that could not be an id or a keyword shown as `*`: a
    path is whatever the client sent, so it may hold PHI or control characters (a forged
    log line)."""
    segments = path[:1000].split("/")
    return "/".join(s if not s or _SEGMENT.fullmatch(s) else "*" for s in segments)[:200]


class ResponseCutShort(Exception):
    """Raised in place of an error that came after the response had started: uvicorn then
    closes the connection (the only honest end of a half-sent response) and logs this,
    not the original, whose message may carry PHI."""


def _origin(exc: BaseException) -> str:
    """Where an exception was raised: the innermost frames' files, lines and functions
    (its message is left out: it may quote a value)."""
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))


class AccessLog:
    """The outermost layer. One line per request: method, path, status, time; query
    values are never logged (they carry patient ids and other PHI), only the parameter
    names. And the last resort for an exception nothing handled: a 500 OperationOutcome
    on a connection that stays open (Starlette's ServerErrorMiddleware sends its 500 and
    re-raises, and uvicorn then closed the connection, resetting every request pipelined
    behind it). One layer for both: each layer costs every request."""

    def __init__(
        self, app: ASGIApp, namer: Namer, structured: bool = False, metered: bool = False
    ) -> None:
        self.app = app
        self.namer = namer  # the request's interaction, for structured lines and metrics
        self.structured = structured
        self.metered = metered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0  # no response started yet
        rid = logs.request_id(_header(scope, b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode("latin-1"))

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except ClientDisconnect:
            status = status or CLIENT_CLOSED  # nobody to answer
        except Exception as exc:
            log.error(
                "unhandled %s on %s %s at %s",
                type(exc).__name__,
                scope["method"],
                loggable_path(scope["path"]),
                _origin(exc),
            )
            if status:
                raise ResponseCutShort from None
            status = 500
            await errors.internal_error()(scope, receive, send)
        finally:
            duration = time.perf_counter() - started
            interaction = self.namer(scope)[0] if self.metered or self.structured else None
            if self.metered:
                metrics.REQUESTS.labels(interaction, str(status or 500)).inc()
                metrics.LATENCY.labels(interaction).observe(duration)
            if access_log.isEnabledFor(logging.INFO):
                self._log(scope, status or 500, duration * 1000, interaction)

    def _log(self, scope: Scope, status: int, duration: float, interaction: str | None) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        names = ",".join(sorted({p.split("=", 1)[0] for p in query.split("&") if p}))[:200]
        path = loggable_path(scope["path"])
        extra = None
        if self.structured:
            state = scope.get("state") or {}
            client = state.get("client_id")
            extra = {
                "request_id": state.get("request_id"),
                "method": scope["method"][:16],
                "path": path,
                "params": names or None,
                "interaction": interaction,
                "status": status,
                "duration_ms": round(duration, 2),
                "client_id": audit.clean(client[:200]) if client else None,
                "user": person[0] if (person := state.get("audit_user")) else None,
            }
        # the record made here, not by access_log.info: that also looks up the calling
        # frame (file and line), which no access line prints, at a sixth of the line's cost
        record = access_log.makeRecord(
            access_log.name,
            logging.INFO,
            __file__,
            0,
            "%s %s%s %d %.1fms",
            (scope["method"], path, f" params={names}" if names else "", status, duration),
            None,
            extra=extra,
        )
        access_log.handle(record)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _settle_heap() -> None:
    """Keep what start-up built (modules, the FHIR models and their validators: about
    100,000 objects) out of the garbage collector's walks, and collect less often.
    Full collections over them were the tail of a search's latency (benchmarks.http; the
    figures are in the README's performance section)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def delivery_settings(settings: Settings) -> DeliverySettings:
    return DeliverySettings(
        retry_seconds=settings.subscription_retry_seconds,
        retention=settings.subscription_retention,
        timeout=settings.subscription_timeout,
        concurrency=settings.subscription_concurrency,
        poll_seconds=settings.subscription_poll_seconds,
    )


def create_app(settings: Settings) -> Starlette:
    state = AppState(settings, datetime.now(UTC).isoformat())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        storage = open_storage(
            DatabaseURL.parse(settings.database_url),
            search_timeout=settings.search_timeout,
            pool_size=settings.db_pool_size,
        )
        signing_key = await storage.signing_key()
        window = settings.token_failure_window
        tasks = TaskService.from_settings(storage, settings)
        bases: list[str] = []

        def base() -> str:
            return settings.base_url or (bases[-1] if bases else "http://localhost")

        dispatcher = Dispatcher(storage, delivery_settings(settings), base)
        hub = WebsocketHub(storage, base, settings.subscription_poll_seconds)
        dispatcher.extra_wake.append(hub.wake)
        opened = Opened(
            storage=storage,
            signing_key=signing_key,
            tokens=VerifiedTokens(signing_key),
            clients=ClientRows(storage, settings.client_cache_seconds),
            users=UserRows(storage, settings.client_cache_seconds),
            failed_pairs=Budget(settings.token_failures_per_client, window),
            address_checks=Budget(settings.token_failures_per_address, window),
            failed_sign_ins=Budget(settings.token_failures_per_client, window),
            user_sign_ins=Budget(settings.sign_in_failures_per_user, 3600.0),
            # derived, so that every server on the database checks every other's forms
            csrf_key=hmac.digest(signing_key, b"caretask sign-in form", "sha256"),
            hash_pool=BoundedPool(settings.token_hash_threads, settings.token_hash_queue),
            audit=AuditWriter(storage, settings.audit_flush_seconds),
            tasks=tasks,
            bundles=BundleService.from_settings(tasks, settings),
            subscriptions=SubscriptionService(
                storage, tasks.limits, settings.subscription_endpoints, dispatcher.wake
            ),
            dispatcher=dispatcher,
            hub=hub,
            bases=bases,
        )
        state.opened = opened
        opened.audit.start()
        storage.on_events(dispatcher.wake)
        dispatcher.start()
        hub.start()
        sampler = Sampler(opened) if settings.metrics != METRICS_OFF else None
        if sampler is not None:
            sampler.start()
        _settle_heap()
        try:
            yield
        finally:
            if sampler is not None:
                await sampler.close()
                metrics.worker_exited(os.getpid())
            await hub.close()
            await dispatcher.close()
            await opened.audit.close()
            await storage.close()
            opened.hash_pool.close()

    app = Starlette(
        routes=routes.routes(),
        lifespan=lifespan,
        exception_handlers={
            DomainError: errors.domain_error,
            errors.HttpProblem: errors.http_problem,
            StorageUnavailable: errors.storage_unavailable,
            HTTPException: errors.starlette_http_error,
        },
    )
    # the same routes, tried by first path segment (http.routing); before the first request
    # builds the middleware stack over it
    app.router = SegmentRouter(routes=app.router.routes, lifespan=lifespan)
    app.state.caretask = state
    app.add_middleware(BodyTimeout, body_timeout=settings.body_timeout)
    app.add_middleware(
        RequestLimits,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        max_url_bytes=settings.max_url_bytes,
        hosts=AllowedHosts(hosts) if (hosts := settings.accepted_hosts()) is not None else None,
    )
    # outside the limits: refused requests are recorded too
    app.add_middleware(
        AuditTrail,
        name=routes.audit_name,
        unaudited=routes.UNAUDITED,
        unaudited_prefixes=(routes.BOARD_PREFIX,),
    )
    app.add_middleware(PrettyJson)  # over every answer but the last-resort 500
    if settings.cors_origins:
        # outside the limits and the routes, so that a browser app can read their refusals;
        # preflights are answered here, unaudited (they read and change nothing)
        app.add_middleware(Cors, origins=settings.cors_origins, methods=routes.SERVED_METHODS)
    # outermost: its last-resort 500 covers every layer
    app.add_middleware(
        AccessLog,
        namer=routes.audit_name,
        structured=settings.log_format == "json",
        metered=settings.metrics != METRICS_OFF,
    )
    return app


def app_from_env() -> Starlette:
    """The factory uvicorn calls in each worker process of `caretask serve --workers N`,
    whose settings come in the environment (config.Settings.to_env)."""
    return create_app(Settings.from_env())
