"""The preamble every FHIR endpoint shares, written once: the caller's token must grant
the endpoint's permission, and the client must accept FHIR JSON."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from caretask.http.auth import authorize
from caretask.http.negotiation import check_accept

Handler = Callable[[Request], Awaitable[Response]]


def endpoint(permission: str | None, resource: str = "Task") -> Callable[[Handler], Handler]:
    """A handler run only for a caller that `permission` (caretask.auth.scopes; None: any
    valid token, for a handler that checks what each part of its request needs) is granted on
    `resource` and that accepts FHIR JSON: 401/403 first, then 406, as every endpoint answers."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            await authorize(request, permission, resource)
            check_accept(request)
            return await handler(request)

        return guarded

    return wrap
