"""Timeouts for slow clients: request headers (in the HTTP protocol) and bodies (ASGI).

uvicorn's httptools protocol only times out an idle keep-alive connection: a client that
opened a connection and sent nothing, or trickled a header line a byte at a time, or sent
part of a body, held its connection (and a file descriptor) for as long as it liked, so a
few hundred of them (slowloris) could exhaust the server.

- Headers: a request's headers must be complete `header_timeout` seconds after the
  connection opened, or after the previous response ended for a keep-alive request; else
  408 and the connection is closed (closed without an answer if nothing arrived at all).
  An idle keep-alive connection is still closed by uvicorn's own keep-alive timeout (idle
  time counts towards the next request's deadline, which only matters if the keep-alive
  timeout is the longer). The common request, whose headers arrive in one read, arms no
  timer: one is armed when a connection opens, or when a read or a response ends inside a
  request.
- Bodies: the whole body must arrive within `body_timeout` seconds of the end of the
  headers (one total per request, so trickling a byte at a time does not extend it); else
  408 and the connection is closed. It is checked where the app waits for the body, so
  requests that have none cost nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from asyncio import TimerHandle
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from caretask.config import Settings
from caretask.domain.outcome import outcome
from caretask.http.responses import FHIR_JSON, fhir_response

log = logging.getLogger("caretask.http")
# the base class, called directly on the per-request path: cheaper than super()
_httptools = HttpToolsProtocol


@functools.cache
def _header_timeout() -> float:
    """Read once per process: uvicorn builds the protocol without our settings, but the
    serve command puts them into the environment of the server and of every worker."""
    return Settings.from_env().header_timeout


@functools.cache
def _header_timeout_response(seconds: float) -> bytes:
    body = orjson.dumps(
        outcome("timeout", f"the request headers did not arrive within {seconds:g} s")
    )
    return (
        b"HTTP/1.1 408 Request Timeout\r\n"
        b"content-type: " + FHIR_JSON.encode() + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for complete request headers.

    The timer is lazy: never cancelled, it checks the state when it fires, and is re-armed
    only when a read or a response ends inside a request. A request whose headers arrive in
    one read costs a dictionary lookup. "Inside the headers" is read from uvicorn's state:
    its on_message_begin starts a new scope, and on_headers_complete gives it a method.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = _header_timeout()
        self._header_timer: TimerHandle | None = None
        self._headers_due = 0.0  # loop time by which the next request's headers are due

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_due = self.loop.time() + self.header_timeout
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        _httptools.data_received(self, data)
        scope = self.scope  # inline _in_headers(): this runs for every read
        if (
            self._header_timer is None
            and scope is not None
            and "method" not in scope
            and self._idle()
        ):
            self._arm(self._headers_due - self.loop.time())

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        _httptools.on_response_complete(self)
        self._headers_due = self.loop.time() + self.header_timeout
        # the next request has begun, or the app left part of this one's body unread: that
        # data cancelled the keep-alive timer, so the header deadline guards the connection
        if (
            self._header_timer is None
            and not pipelined
            and ("method" not in self.scope or self.cycle.more_body)
            and not self.transport.is_closing()
        ):
            self._arm(self.header_timeout)

    def _in_headers(self) -> bool:
        """Whether a request has begun and its headers are not complete."""
        return self.scope is not None and "method" not in self.scope

    def _idle(self) -> bool:
        """Whether no request is being answered (a pipelined request's headers are due
        from the end of the response before it)."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self, delay: float) -> None:
        self._header_timer = self.loop.call_later(max(delay, 0.0), self._deadline)

    def _deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._idle():
            return  # the app has the request; the body timeout is its guard
        waiting = self.scope is None or self._in_headers() or self.cycle.more_body
        if not waiting:
            return  # an idle keep-alive connection: uvicorn's keep-alive timeout applies
        remaining = self._headers_due - self.loop.time()
        if remaining > 0:  # this timer was armed for an earlier deadline
            self._arm(remaining)
            return
        if self._in_headers():
            log.debug("request headers incomplete after %gs: 408", self.header_timeout)
            self.transport.write(_header_timeout_response(self.header_timeout))
        self.transport.close()


# requests whose bodies caretask never reads: no deadline, and no cost on the read path
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTimedOut(Exception):
    """Raised from `receive` when the body is late; BodyTimeout turns it into the 408."""


class BodyTimeout:
    """A deadline for the whole request body, from the moment the app gets the request."""

    def __init__(self, app: ASGIApp, *, body_timeout: float) -> None:
        self.app = app
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS:
            await self.app(scope, receive, send)
            return
        due = asyncio.get_running_loop().time() + self.body_timeout
        body_complete = responded = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:  # later calls wait for a disconnect, which may take long
                return await receive()
            try:
                async with asyncio.timeout_at(due):
                    message = await receive()
            except TimeoutError:
                raise BodyTimedOut from None
            body_complete = not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal responded
            responded = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except BodyTimedOut:
            if responded:  # too late for a 408: uvicorn closes the connection
                raise
            log.debug("request body incomplete after %gs: 408", self.body_timeout)
            text = f"the request body did not arrive within {self.body_timeout:g} s"
            response = fhir_response(outcome("timeout", text), 408, {"Connection": "close"})
            await response(scope, receive, send)
