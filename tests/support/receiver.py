"""A real webhook receiver on loopback: an HTTP server in a thread that keeps every POST it
is sent, answers with the status the test sets, and can go down and come back on its port."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from tests.support.server import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.time() when it arrived

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    status: int = 200  # what it answers
    delay: float = 0.0  # seconds it waits before answering
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if not body or len(body) < length:
                    # the sender went away mid-request (a server killed while it sent):
                    # nothing arrived, so nothing is acknowledged
                    self.close_connection = True
                    return
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.status
                if 200 <= status < 300:  # only what it acknowledged counts as received
                    with receiver._arrived:
                        receiver.received.append(
                            Received(
                                self.path,
                                {k.lower(): v for k, v in self.headers.items()},
                                body,
                                time.time(),
                            )
                        )
                        receiver._arrived.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        """Stop listening: deliveries meet a refused connection until up() again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        """The notifications received once `predicate` holds of them; AssertionError after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not predicate(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not received in {timeout} s: {len(self.received)}")
                self._arrived.wait(left)
            return list(self.received)


def notification_type(received: Received) -> str:
    """A notification's SubscriptionStatus type (handshake, heartbeat, event-notification)."""
    status = received.json()["entry"][0]["resource"]
    return next(p["valueCode"] for p in status["parameter"] if p["name"] == "type")


def event_numbers(received: Received) -> list[int]:
    """The event numbers a notification carries, in its order."""
    status = received.json()["entry"][0]["resource"]
    numbers = []
    for parameter in status["parameter"]:
        if parameter["name"] == "notification-event":
            for part in parameter["part"]:
                if part["name"] == "event-number":
                    numbers.append(int(part.get("valueString", part.get("valueInteger64", 0))))
    return numbers


def signature_valid(received: Received, secret: str) -> bool:
    """Whether its X-Caretask-Signature (t=<unix seconds>,v1=<hex>) is the HMAC-SHA256 of
    "<t>.<body>" with the subscription's secret."""
    fields = dict(
        part.split("=", 1) for part in received.headers["x-caretask-signature"].split(",")
    )
    expected = hmac.new(
        secret.encode(), fields["t"].encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])
