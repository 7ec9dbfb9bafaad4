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
  request. Blank lines after a response (allowed before a request) cancel uvicorn's
  keep-alive timer, so they start the next request's deadline.
- Bodies: the whole body must arrive within `body_timeout` seconds of the end of the
  headers (one total per request, so trickling a byte at a time does not extend it); else
  408 and the connection is closed. It is checked where the app waits for the body, so
  requests that have none cost nothing.

The protocol also bounds a request's head while it arrives (http.limits checks complete
heads exactly, as OperationOutcomes the audit trail records): uvicorn gathers the URL and
each header line whole before anything looks at their size, so one connection sending an
endless URL or header line held as much memory as it sent. So did a chunked body's trailer
section (httptools gathers each trailer line whole, uvicorn kept every trailer field), and a
chunk-size line or extension that never ends, or blank lines after a response, were read
for as long as they came: these bytes after a head besides its body are held to the header
limit too. Trailer fields are dropped (RFC 9110 6.5.1: not merged into the headers). And it
answers malformed HTTP with a 400 OperationOutcome instead of uvicorn's text/plain one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from asyncio import TimerHandle
from http import HTTPStatus
from typing import Any, cast

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from caretask.config import Settings
from caretask.domain.outcome import outcome
from caretask.http.limits import headers_too_large, url_too_long
from caretask.http.responses import EVERY_RESPONSE, FHIR_JSON, fhir_response

log = logging.getLogger("caretask.http")
# the base class, called directly on the per-request path: cheaper than super()
_httptools = HttpToolsProtocol


@functools.cache
def _refusal(status: int, text: str, code: str) -> bytes:
    """A complete response that ends the connection, written by the protocol itself."""
    body = orjson.dumps(outcome(code, text))
    every = "".join(f"{name}: {value}\r\n" for name, value in EVERY_RESPONSE).encode()
    return (
        b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())
        + b"content-type: "
        + FHIR_JSON.encode()
        + b"\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body)
        + every
        + b"\r\n"
        + body
    )


# a request line's bytes besides its URL: method, spaces, version and CRLF
_REQUEST_LINE = 32
# how long a refused client may go on sending (discarded) before the connection is closed:
# closing with unread data resets the connection, which can destroy the answer in transit
_LINGER_SECONDS = 2.0


class _Dropped(list[tuple[bytes, bytes]]):
    """Where uvicorn puts a request's trailer fields: nowhere (RFC 9110 6.5.1, a trailer
    field is not merged into the headers; caretask uses none)."""

    def append(self, field: tuple[bytes, bytes]) -> None:
        pass


_DROPPED = _Dropped()


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for complete request headers, limits
    on a request head's size while it arrives, and malformed HTTP answered in FHIR.

    The timer is lazy: never cancelled, it checks the state when it fires, and is re-armed
    only when a read or a response ends inside a request. A request whose headers arrive in
    one read costs a dictionary lookup. "Inside the headers" is read from uvicorn's state:
    its on_message_begin starts a new scope, and on_headers_complete gives it a method.

    A head's size is counted over the reads that arrive while it is incomplete, from the
    read after the one in which it began (whose bytes may belong to the request before):
    past the limits by at most one read, it is refused with 414 or 431 and the connection
    closed. A head that completes is left to http.limits.

    After the head, the reads that carry neither body data nor a chunk's start are counted
    the same way ("the tail": a chunk-size line and its extensions, the trailer section,
    blank lines before the next request), from the read after the one in which the head
    completed or the latest chunk began: past the header limit by at most one read, 431
    (or only the close, if the request was answered already). A chunk's start restarts the
    count, so a body of many small chunks is not refused for its framing; a chunk's
    extensions are skipped by the parser, not held.
    """

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = settings.header_timeout
        self.max_url_bytes = settings.max_url_bytes
        self.max_header_bytes = settings.max_header_bytes
        self._header_timer: TimerHandle | None = None
        self._headers_due = 0.0  # loop time by which the next request's headers are due
        self._head_bytes = 0  # bytes read of the current request's incomplete head
        # bytes read after the head besides body data (see above); None while the head is
        # incomplete, for the read that completes it is not counted
        self._tail_bytes: int | None = 0
        self._framed = False  # whether the latest read carried body data or a chunk's start
        self._refused = False  # refused by the protocol: the rest of the input is discarded
        # its answer (b"" for none), until the responses before it are sent
        self._refusal: bytes | None = None

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
        if self._refused:
            return
        before = self.scope
        self._framed = False
        _httptools.data_received(self, data)
        scope = self.scope
        if scope is None:
            return
        if "method" not in scope:  # inline _in_headers(): this runs for every read
            if self._refused:
                return
            if scope is before:
                self._head_bytes += len(data)
                self._check_head()
            else:  # begun in this read, after an unknown share of it
                self._head_bytes = 0
            self._tail_bytes = None
            if self._header_timer is None and self._idle():
                self._arm(self._headers_due - self.loop.time())
        elif scope is not before:  # begun in this read, and its head complete
            self._tail_bytes = 0
        elif not self._framed and not self._refused:
            tail = self._tail_bytes
            if tail is None:  # the head completed in this read, after an unknown share of it
                self._tail_bytes = 0
            else:
                self._tail_bytes = tail = tail + len(data)
                self._check_tail(tail)

    def on_body(self, body: bytes) -> None:
        self._framed = True
        _httptools.on_body(self, body)

    def on_chunk_header(self) -> None:
        """A chunk's size line has been read (httptools calls this only for chunked bodies)."""
        self._framed = True
        self._tail_bytes = 0
        self.headers = _DROPPED  # for the trailer fields, which follow the last chunk

    def _check_tail(self, tail: int) -> None:
        if tail > self.max_header_bytes:
            cycle = self.cycle  # the request after whose head the bytes came
            answered = cycle is not None and cycle.response_started
            self._refuse(*headers_too_large(self.max_header_bytes), "too-long", answer=not answered)
        elif self._header_timer is None and self._idle():
            # blank lines after a response cancelled uvicorn's keep-alive timer: the next
            # request's headers are due as if they had begun
            self._arm(self._headers_due - self.loop.time())

    def _url_too_long(self) -> bool:
        return len(self.url) > self.max_url_bytes + 1  # the limit does not count the '?'

    def _check_head(self) -> None:
        if self._url_too_long():
            self._refuse(*url_too_long(self.max_url_bytes), "too-long")
        elif self._head_bytes - len(self.url) > self.max_header_bytes + _REQUEST_LINE:
            self._refuse(*headers_too_large(self.max_header_bytes), "too-long")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to input its parser refuses (msg is its text/plain message)."""
        if self.scope is not None and self._url_too_long():
            # httptools cannot parse a URL over 64 KiB: too long before it is invalid
            self._refuse(*url_too_long(self.max_url_bytes), "too-long")
        else:
            self._refuse(400, "the request is not valid HTTP/1.1", "structure")

    def _refuse(self, status: int, text: str, code: str, answer: bool = True) -> None:
        """Stop reading requests, and answer (unless `answer` is false: the request was
        answered already) once the responses before are sent."""
        log.info("request refused by the HTTP protocol: %d", status)
        self._refused = True
        self._refusal = _refusal(status, text, code) if answer else b""
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_started:
            # the latest request's body will never arrive: the refusal is its answer
            cycle.disconnected = True
            cycle.message_event.set()
            if not (self.pipeline and self.pipeline[0][0] is cycle):
                self._send_refusal()  # it was being answered: nothing is before it
                return
            self.pipeline.popleft()  # queued: answered after the responses before it
        if self._idle() and not self.pipeline:
            self._send_refusal()

    def _send_refusal(self) -> None:
        """The refusal, then a close once the client has had time to read it (or at once
        if the transport cannot half-close)."""
        if self.transport.is_closing() or self._refusal is None:
            return
        if self._refusal:
            self.transport.write(self._refusal)
        self._refusal = None
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(_LINGER_SECONDS, self._close)
        else:
            self.transport.close()

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        _httptools.on_response_complete(self)
        if self._refused:
            if not pipelined:
                self._send_refusal()
            return
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
        if self.transport.is_closing() or self._refused or not self._idle():
            return  # the app has the request; the body timeout is its guard
        waiting = (
            self.scope is None
            or self._in_headers()
            or self.cycle.more_body
            # bytes since the response (blank lines) cancelled uvicorn's keep-alive timer
            or self.timeout_keep_alive_task is None
        )
        if not waiting:
            return  # an idle keep-alive connection: uvicorn's keep-alive timeout applies
        remaining = self._headers_due - self.loop.time()
        if remaining > 0:  # this timer was armed for an earlier deadline
            self._arm(remaining)
            return
        if self._in_headers():
            log.debug("request headers incomplete after %gs: 408", self.header_timeout)
            text = f"the request headers did not arrive within {self.header_timeout:g} s"
            self.transport.write(_refusal(408, text, "timeout"))
        self.transport.close()


def edge_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """EdgeProtocol for uvicorn's `http`, with these settings' limits. uvicorn calls it as
    a class; a partial, unlike a class made here, pickles into worker processes."""
    return cast("type[asyncio.Protocol]", functools.partial(EdgeProtocol, settings=settings))


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
