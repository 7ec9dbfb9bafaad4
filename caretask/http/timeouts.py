"""Timeouts for slow clients: request headers (in the HTTP protocol) and bodies (ASGI).

uvicorn's httptools protocol only times out an idle keep-alive connection: a client that
opened a connection and sent nothing, or trickled a header line a byte at a time, or sent
part of a body, held its connection (and a file descriptor) for as long as it liked, so a
few hundred of them (slowloris) could exhaust the server.

- Headers: a request's headers must be complete `header_timeout` seconds after the
  connection opened, or after the previous response ended for a keep-alive request; else
  408 and the connection is closed (closed without an answer if nothing arrived at all).
  An idle keep-alive connection is still closed by uvicorn's own keep-alive timeout. The
  common request, whose headers arrive in one read, arms no timer: a timer is armed when a
  connection opens, or when a read ends inside a request's headers.
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


@functools.cache
def _header_timeout() -> float:
    """Read once per process: uvicorn builds the protocol without our settings, but the
    serve command puts them into the environment of the server and of every worker."""
    return Settings.from_env().header_timeout


@functools.cache
def _header_timeout_response(seconds: float) -> bytes:
    body = orjson.dumps(
        outcome("timeout", f"the request headers did not arrive within {seconds:g} seconds")
    )
    return (
        b"HTTP/1.1 408 Request Timeout\r\n"
        b"content-type: " + FHIR_JSON.encode() + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for complete request headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = _header_timeout()
        self._header_timer: TimerHandle | None = None
        self._headers_due = 0.0  # loop time by which the next request's headers are due
        self._in_message = False  # a request has begun and not all of it has arrived
        self._in_headers = False  # ... and its headers are not complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_due = self.loop.time() + self.header_timeout
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # a read that ended inside headers, while no request is being answered (the
        # deadline of a pipelined request's headers starts when the response before ends)
        if (
            self._in_headers
            and self._header_timer is None
            and (self.cycle is None or self.cycle.response_complete)
        ):
            self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = self._in_headers = True

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        self._headers_due = self.loop.time() + self.header_timeout
        # the next request has begun (or the app left part of this body unread): the
        # keep-alive timer was cancelled by that data, so the deadline guards it
        if self._in_message and not pipelined and not self.transport.is_closing():
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        delay = max(self._headers_due - self.loop.time(), 0.0)
        self._header_timer = self.loop.call_later(delay, self._headers_overdue)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._in_headers:
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
            text = f"the request body did not arrive within {self.body_timeout:g} seconds"
            response = fhir_response(outcome("timeout", text), 408, {"Connection": "close"})
            await response(scope, receive, send)
