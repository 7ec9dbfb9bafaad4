"""HTTP over a raw socket, for the tests that send what no HTTP client would: trickled,
endless, pipelined or malformed requests."""

from __future__ import annotations

import socket

from tests.support.server import Server


def connect(srv: Server) -> socket.socket:
    """A connection to the server (a socket is its own context manager: it closes)."""
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response, read to its last byte and not beyond (pipelined ones follow it)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed before a complete response: {head!r}")
        head += byte
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed: recv sees end of stream (or a reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
