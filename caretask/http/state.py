"""What the handlers share, typed: the settings, and what the lifespan opens with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

if TYPE_CHECKING:  # the modules below read their state through this one
    from caretask.auth.throttle import BoundedPool, Budget
    from caretask.auth.tokens import VerifiedTokens
    from caretask.config import Settings
    from caretask.http.audit import AuditWriter
    from caretask.http.auth import ClientRows, UserRows
    from caretask.service import BundleService, TaskService
    from caretask.service.delivery import Dispatcher, WebsocketHub
    from caretask.service.subscriptions import SubscriptionService
    from caretask.storage.base import Storage


@dataclass(frozen=True)
class Opened:
    """What the lifespan opens, held for the process's life."""

    storage: Storage
    signing_key: bytes
    tokens: VerifiedTokens
    clients: ClientRows
    users: UserRows  # people's rows, for their tokens (cached as clients' are)
    failed_pairs: Budget  # token failures per (address, client id)
    address_checks: Budget  # secret checks per address (token requests and sign-ins)
    failed_sign_ins: Budget  # sign-in failures per (address, username)
    user_sign_ins: Budget  # sign-in failures per username, from any address
    csrf_key: bytes  # the sign-in form's CSRF tokens are HMACs under it (http.sign_in)
    hash_pool: BoundedPool
    audit: AuditWriter
    tasks: TaskService  # every task read and write goes through it
    bundles: BundleService  # batch and transaction Bundles, over `tasks`
    subscriptions: SubscriptionService
    dispatcher: Dispatcher  # rest-hook notifications
    hub: WebsocketHub  # websocket clients bound on this server
    # the newest base URL a request came in on: the notifications' fullUrls use it when
    # no CARETASK_BASE_URL is set
    bases: list[str] = field(default_factory=list)


@dataclass
class AppState:
    settings: Settings
    started_at: str
    opened: Opened | None = None  # None until the lifespan has run


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.caretask
    return state


def settings(request: Request) -> Settings:
    return app_state(request).settings


def opened(request: Request) -> Opened:
    state = app_state(request).opened
    assert state is not None, "the lifespan opens the storage before any request"
    return state
