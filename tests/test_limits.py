"""Request limits answered as OperationOutcomes before any work is done."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from pathlib import Path

import httpx

from tests.support.rawhttp import connect
from tests.support.seed import seed_task
from tests.support.server import Server

FHIR_JSON = "application/fhir+json; charset=utf-8"


def _assert_outcome(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == FHIR_JSON
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "too-long"


def test_headers_over_16_kb_are_431(api: httpx.Client) -> None:
    _assert_outcome(api.get("/Task", headers={"X-Padding": "a" * 17_000}), 431)


def test_more_than_100_headers_are_431(api: httpx.Client) -> None:
    headers = {f"X-Extra-{i}": "x" for i in range(101)}
    _assert_outcome(api.get("/Task", headers=headers), 431)


def test_a_url_over_8_kb_is_414(api: httpx.Client) -> None:
    _assert_outcome(api.get("/Task", params={"description": "a" * 8_200}), 414)


def test_requests_within_the_limits_are_served(api: httpx.Client) -> None:
    headers = {"X-Padding": "a" * 10_000, **{f"X-Extra-{i}": "x" for i in range(50)}}
    response = api.get("/Task", params={"description": "a" * 7_000}, headers=headers)
    assert response.status_code == 200


def test_the_limits_are_configurable(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(env={"CARETASK_MAX_URL_BYTES": "100", "CARETASK_MAX_HEADERS": "200"})
    with srv.client(srv.token()) as client:
        _assert_outcome(client.get("/Task", params={"description": "a" * 200}), 414)
        headers = {f"X-Extra-{i}": "x" for i in range(150)}
        assert client.get("/Task", headers=headers).status_code == 200


def _nested_extension(depth: int) -> dict[str, object]:
    extension: dict[str, object] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(depth):
        extension = {"url": "http://example.org/branch", "extension": [extension]}
    return extension


def test_json_nested_deeper_than_32_levels_is_400(api: httpx.Client) -> None:
    response = api.post("/Task", json=seed_task(extension=[_nested_extension(16)]))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly"
    assert issue["details"]["text"] == "nesting deeper than 32 levels"


def test_the_json_depth_limit_is_configurable(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(env={"CARETASK_MAX_JSON_DEPTH": "8"})
    with srv.client(srv.token()) as client:
        assert client.post("/Task", json=seed_task()).status_code == 201
        response = client.post("/Task", json=seed_task(extension=[_nested_extension(3)]))
        assert response.status_code == 400
        assert response.json()["issue"][0]["details"]["text"] == "nesting deeper than 8 levels"


# --- the head's limits apply while its bytes arrive, with no token -------------------------

HEAD_CUTOFF = 64 * 1024  # bytes a client may send past which it must have been stopped


def _send_until_stopped(
    sock: socket.socket, head: bytes, filler: bytes, most: int, wait: float = 0.01
) -> int:
    """Send `head`, then `filler` again and again until the server answers or closes the
    connection, or `most` bytes were sent; the bytes sent. `wait` gives the server time to
    read each piece."""
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(head)
        sent = len(head)
        while sent < most:
            readable, _, _ = select.select([sock], [], [], wait)
            if readable:
                break
            sock.sendall(filler)
            sent += len(filler)
    return sent


def _answer(sock: socket.socket) -> bytes:
    """What the server sent before closing (nothing if it reset the connection)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _one_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, and not a byte more."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(1)
    length = int(received.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(received.partition(b"\r\n\r\n")[2]) < length:
        received += sock.recv(length)
    return received


def _assert_refused(answer: bytes, status: int) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split()[1] == str(status), lines[0]
    assert f"content-type: {FHIR_JSON}" in [line.lower() for line in lines[1:]]
    assert "connection: close" in [line.lower() for line in lines[1:]]
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "too-long"


def _rss_kib(srv: Server) -> int:
    assert srv.process is not None
    status = Path(f"/proc/{srv.process.pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def test_an_endless_url_is_refused_with_414_before_64_kb_were_sent(server: Server) -> None:
    with connect(server) as sock:
        sent = _send_until_stopped(sock, b"GET /Task?description=", b"a" * 1024, 1024 * 1024)
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 414)


def test_an_endless_path_is_refused_with_414_before_64_kb_were_sent(server: Server) -> None:
    with connect(server) as sock:
        sent = _send_until_stopped(sock, b"GET /Task/", b"a" * 1024, 1024 * 1024)
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 414)


def test_an_endless_header_line_is_refused_with_431_before_64_kb_were_sent(
    server: Server,
) -> None:
    head = b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: "
    with connect(server) as sock:
        sent = _send_until_stopped(sock, head, b"a" * 1024, 1024 * 1024)
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 431)


def test_endless_small_headers_are_refused_with_431_before_64_kb_were_sent(
    server: Server,
) -> None:
    head = b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    with connect(server) as sock:
        sent = _send_until_stopped(sock, head, b"X-A: b\r\n" * 128, 1024 * 1024)
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 431)


def test_an_endless_header_on_a_keep_alive_connection_is_refused_with_431(
    server: Server,
) -> None:
    get = b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(get)
        assert _one_response(sock).startswith(b"HTTP/1.1 200")
        sent = _send_until_stopped(sock, get[:-2] + b"X-Endless: ", b"a" * 1024, 1024 * 1024)
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 431)


def test_a_head_within_the_limits_sent_in_pieces_is_served(server: Server) -> None:
    head = (
        b"GET /metadata?_format=json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-Padding-%d: %s\r\n" % (i, b"a" * 1000) for i in range(12))
        + b"\r\n"
    )
    with connect(server) as sock:
        for start in range(0, len(head), 1000):
            sock.sendall(head[start : start + 1000])
            time.sleep(0.005)
        assert _one_response(sock).startswith(b"HTTP/1.1 200")


def test_endless_urls_and_headers_do_not_grow_the_servers_memory(server: Server) -> None:
    before = _rss_kib(server)
    heads = [b"GET /Task?description=", b"GET /metadata HTTP/1.1\r\nX-Endless: "] * 2
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in heads]
    try:
        for sock, head in zip(socks, heads, strict=True):
            _send_until_stopped(sock, head, b"a" * 65536, 32 * 1024 * 1024, wait=0)
        held = _rss_kib(server) - before  # while the connections are open
    finally:
        for sock in socks:
            sock.close()
    assert held < 8 * 1024
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# --- the bytes of a request after its head besides its body: chunk-size lines, chunk ---------
# --- extensions, the trailer section (the same class of attack, after the head) -------------

CHUNKED = b"Host: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
CHUNKED += b"Transfer-Encoding: chunked\r\n\r\n"
# the token endpoint reads the whole body before it looks at anything: no token needed
TOKEN_POST = b"POST /auth/token HTTP/1.1\r\n" + CHUNKED
GRANT = b"grant_type=client_credentials"
LAST_CHUNK = b"%x\r\n%s\r\n0\r\n" % (len(GRANT), GRANT)
# answered (401) before its body is read
SEARCH_POST = b"POST /Task/_search HTTP/1.1\r\n" + CHUNKED


def _flood(
    sock: socket.socket, head: bytes, filler: bytes, most: int, wait: float
) -> tuple[int, bytes]:
    """Send `head`, then `filler` again and again, reading whatever the server answers, until
    it closes the connection or `most` bytes were sent; the bytes sent and what it answered.
    `wait` gives the server time to read each piece."""
    sent, received = 0, b""
    try:
        sock.sendall(head)
        sent = len(head)
        while sent < most:
            if select.select([sock], [], [], wait)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                continue
            sock.sendall(filler)
            sent += len(filler)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent, received


def _statuses(answer: bytes) -> list[int]:
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def test_an_endless_trailer_line_is_refused_with_431_before_64_kb_were_sent(
    server: Server,
) -> None:
    with connect(server) as sock:
        sent = _send_until_stopped(
            sock, TOKEN_POST + LAST_CHUNK + b"X-Endless: ", b"a" * 1024, 1024 * 1024
        )
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 431)


def test_endless_small_trailer_lines_are_refused_with_431_before_64_kb_were_sent(
    server: Server,
) -> None:
    with connect(server) as sock:
        sent = _send_until_stopped(sock, TOKEN_POST + LAST_CHUNK, b"X-A: b\r\n" * 128, 1024 * 1024)
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 431)


def test_an_endless_chunk_extension_is_refused_with_431_before_64_kb_were_sent(
    server: Server,
) -> None:
    with connect(server) as sock:
        sent = _send_until_stopped(sock, TOKEN_POST + b"5;ext=", b"a" * 1024, 1024 * 1024)
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 431)


def test_an_endless_chunk_size_line_is_refused_with_431_before_64_kb_were_sent(
    server: Server,
) -> None:
    with connect(server) as sock:  # leading zeros: a valid size that never ends
        sent = _send_until_stopped(sock, TOKEN_POST, b"0" * 1024, 1024 * 1024)
        assert sent < HEAD_CUTOFF
        _assert_refused(_answer(sock), 431)


def test_an_endless_trailer_after_the_answer_closes_the_connection_before_64_kb_were_sent(
    server: Server,
) -> None:
    head = SEARCH_POST + b"5\r\n_id=x\r\n0\r\nX-Endless: "
    with connect(server) as sock:
        sent, answer = _flood(sock, head, b"a" * 1024, 1024 * 1024, wait=0.01)
    assert sent < HEAD_CUTOFF
    assert _statuses(answer) == [401]  # no second answer to a request already answered


def test_endless_blank_lines_after_a_response_close_the_connection_before_64_kb_were_sent(
    server: Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _one_response(sock).startswith(b"HTTP/1.1 200")
        sent, answer = _flood(sock, b"", b"\r\n" * 512, 1024 * 1024, wait=0.01)
    assert sent < HEAD_CUTOFF
    assert answer == b""  # blank lines are no request: nothing to answer


def test_trailer_fields_are_not_taken_for_request_headers(server: Server) -> None:
    # 101 trailer fields: taken for headers, they would be over the limit of 100 (431)
    trailers = b"".join(b"X-T-%d: x\r\n" % i for i in range(101))
    with connect(server) as sock:
        sock.sendall(SEARCH_POST + b"5\r\n_id=x\r\n0\r\n" + trailers + b"\r\n")
        assert _one_response(sock).startswith(b"HTTP/1.1 401")


def test_a_chunked_body_with_trailers_within_the_limits_sent_in_pieces_is_served(
    server: Server, token: str
) -> None:
    body = json.dumps(seed_task()).encode()
    head = (
        b"POST /Task HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
        b"Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" % token.encode()
    )
    trailer = b"".join(b"X-Trailer-%d: %s\r\n" % (i, b"a" * 1000) for i in range(12))
    request = head + b"%x;name=value\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, trailer)
    with connect(server) as sock:
        for start in range(0, len(request), 1000):
            sock.sendall(request[start : start + 1000])
            time.sleep(0.005)
        assert _one_response(sock).startswith(b"HTTP/1.1 201")


def test_a_body_in_thousands_of_one_byte_chunks_is_served(server: Server, token: str) -> None:
    # its chunk framing (5 bytes a chunk) is more than the header limit, sent in pieces
    body = json.dumps(seed_task(description="a" * 4000)).encode()
    head = (
        b"POST /Task HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
        b"Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n" % token.encode()
    )
    with connect(server) as sock:
        sock.sendall(head)
        for byte in body:
            sock.sendall(b"1\r\n")
            sock.sendall(bytes([byte]) + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        assert _one_response(sock).startswith(b"HTTP/1.1 201")


def test_endless_trailers_and_chunk_framing_do_not_grow_the_servers_memory(
    server: Server,
) -> None:
    before = _rss_kib(server)
    floods = [
        (TOKEN_POST + LAST_CHUNK + b"X-Endless: ", b"a" * 65536),
        (SEARCH_POST + b"5\r\n_id=x\r\n0\r\nX-Endless: ", b"a" * 65536),
        (SEARCH_POST + b"5\r\n_id=x\r\n0\r\n", b"X-A: b\r\n" * 8192),
        (TOKEN_POST + b"5;ext=", b"a" * 65536),
    ]
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in floods]
    try:
        for sock, (head, filler) in zip(socks, floods, strict=True):
            _flood(sock, head, filler, 32 * 1024 * 1024, wait=0)
        held = _rss_kib(server) - before  # while the connections are open
    finally:
        for sock in socks:
            sock.close()
    assert held < 8 * 1024
    assert httpx.get(f"{server.url}/healthz").status_code == 200
