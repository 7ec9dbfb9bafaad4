"""Route dispatch by a request's first path segment.

Starlette's Router tries every route in turn, a regular expression each, and a read of a
Task came after some twenty others. This one tries, in the same order, only the routes
whose first path segment is the request's (and any whose first segment is a parameter),
and leaves everything else (lifespan, unmatched paths, slash redirects, the 404) to
Starlette's own, so that which route answers a request is unchanged."""

from __future__ import annotations

from collections.abc import Sequence

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Router
from starlette.types import Receive, Scope, Send

_ANY = None  # the key of routes whose first segment is a path parameter


def first_segment(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


def _route_key(route: BaseRoute) -> str | None:
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return _ANY
    segment = first_segment(path)
    return _ANY if "{" in segment else segment


class SegmentRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], **kwargs: object) -> None:
        super().__init__(routes=routes, **kwargs)  # type: ignore[arg-type]
        keys = [_route_key(route) for route in self.routes]
        self._any = [r for r, k in zip(self.routes, keys, strict=True) if k is _ANY]
        self._by_segment = {
            key: [r for r, k in zip(self.routes, keys, strict=True) if k in (key, _ANY)]
            for key in set(keys) - {_ANY}
        }

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            segment = first_segment(get_route_path(scope))  # as Route.matches reads it
            partial = None
            for route in self._by_segment.get(segment, self._any):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
                if match is Match.PARTIAL and partial is None:
                    partial, partial_scope = route, child_scope
            if partial is not None:
                scope.setdefault("router", self)
                scope["route"] = partial
                scope.update(partial_scope)
                await partial.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)
