"""The HTTP edge.

A 5xx answers as an OperationOutcome and keeps the connection; malformed HTTP is a 400
OperationOutcome; a body in a content coding is a 415; responses carry nosniff, FHIR ones
no-store; a Host that is not allowed is a 400, and it never reaches a URL the server writes.
Spoken to over raw sockets where the bytes on the connection are what is tested.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import time

import httpx
import pytest

from caretask.config import BadSetting, Settings
from caretask.http.urls import AllowedHosts
from tests.support.clients import create_task
from tests.support.rawhttp import closed_by_server, connect, read_response
from tests.support.seed import SEED_CREATE, seed_task
from tests.support.server import Server

FHIR_JSON = "application/fhir+json; charset=utf-8"
GET_METADATA = b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _outcome(body: bytes, code: str) -> dict[str, object]:
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    return outcome


def _request(method: str, path: str, token: str | None = None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra}\r\n".encode()


# --- a 5xx keeps the keep-alive connection -------------------------------------------------


def _rename_table(database: str, old: str, new: str) -> None:
    """A storage failure under a running server: a table it reads is gone."""
    if database.startswith("postgresql"):
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
    else:
        with sqlite3.connect(database.removeprefix("sqlite:///")) as conn:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_an_unexpected_error_is_a_500_outcome_and_the_connection_serves_the_next_request(
    make_server, fresh_database: str
) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(database=fresh_database)
    token = srv.token()
    with srv.client(token) as api:
        task_id = create_task(api, seed_task())
    _rename_table(fresh_database, "task_versions", "task_versions_gone")
    vread = _request("GET", f"/Task/{task_id}/_history/1", token)
    with connect(srv) as sock:
        sock.sendall(vread + GET_METADATA)  # pipelined: the second waits for the first
        status, headers, body = read_response(sock)
        assert status == 500
        assert headers["content-type"] == FHIR_JSON
        assert headers.get("connection") != "close"
        assert _outcome(body, "exception")["issue"][0]["details"]["text"] == (  # type: ignore[index]
            "internal server error"
        )
        assert read_response(sock)[0] == 200
        sock.sendall(GET_METADATA)  # and the connection is still open
        assert read_response(sock)[0] == 200
    log = srv.log()
    assert "unhandled " in log and f"/Task/{task_id}/_history/1" in log
    assert "Traceback" not in log  # uvicorn no longer logs the exception, message and all


def test_a_503_keeps_the_connection_open(make_server, fresh_database: str) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(database=fresh_database)
    _rename_table(fresh_database, "alembic_version", "alembic_version_gone")
    with connect(srv) as sock:
        sock.sendall(_request("GET", "/readyz") + _request("GET", "/healthz"))
        status, headers, body = read_response(sock)
        assert status == 503
        assert headers.get("connection") != "close"
        assert headers["cache-control"] == "no-store"
        _outcome(body, "transient")
        assert read_response(sock)[0] == 200


# --- malformed HTTP is a 400 OperationOutcome ----------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX\x01Y: z\r\n\r\n",
        b"POST /Task HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n{}",
    ],
    ids=["garbage", "control-character-in-header-name", "content-length-not-a-number"],
)
def test_malformed_http_is_a_400_outcome_and_the_connection_closes(
    server: Server, request_bytes: bytes
) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes)
        status, headers, body = read_response(sock)
        assert status == 400
        assert headers["content-type"] == FHIR_JSON
        assert headers["connection"] == "close"
        assert headers["x-content-type-options"] == "nosniff"
        _outcome(body, "structure")
        assert closed_by_server(sock)


def test_malformed_http_behind_a_valid_request_is_answered_after_it(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(GET_METADATA + b"GARBAGE\r\n\r\n")
        assert read_response(sock)[0] == 200
        status, _, body = read_response(sock)
        assert status == 400
        _outcome(body, "structure")
        assert closed_by_server(sock)


def test_a_malformed_chunked_body_is_a_400_at_once(server: Server, token: str) -> None:
    headers = "Content-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n"
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(_request("POST", "/Task", token, headers) + b"zz\r\n{}\r\n0\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 400
        _outcome(body, "structure")
        assert time.monotonic() - started < 2  # not after the body timeout


# --- a body in a content coding is a 415 ---------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "gzip, identity", "x-unknown"])
def test_a_body_in_a_content_coding_is_a_415_that_names_content_encoding(
    api: httpx.Client, encoding: str
) -> None:
    body = gzip.compress(json.dumps(SEED_CREATE).encode())
    headers = {"Content-Type": "application/fhir+json", "Content-Encoding": encoding}
    response = api.post("/Task", content=body, headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"] == FHIR_JSON
    assert response.headers["accept-encoding"] == "identity"
    text = _outcome(response.content, "not-supported")["issue"][0]["details"]["text"]  # type: ignore[index]
    assert text.startswith(f"Content-Encoding {encoding} is not supported")


def test_an_encoded_update_and_form_search_are_415_too(api: httpx.Client) -> None:
    task_id = create_task(api, seed_task())
    encoded = {"Content-Encoding": "gzip"}
    update = api.put(
        f"/Task/{task_id}",
        content=gzip.compress(json.dumps(SEED_CREATE).encode()),
        headers={"Content-Type": "application/fhir+json", **encoded},
    )
    assert update.status_code == 415
    search = api.post(
        "/Task/_search",
        content=gzip.compress(b"status=requested"),
        headers={"Content-Type": "application/x-www-form-urlencoded", **encoded},
    )
    assert search.status_code == 415
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"1"'  # nothing was written


def test_content_encoding_identity_is_accepted(api: httpx.Client) -> None:
    headers = {"Content-Type": "application/fhir+json", "Content-Encoding": "identity"}
    response = api.post("/Task", content=json.dumps(SEED_CREATE), headers=headers)
    assert response.status_code == 201


# --- nosniff everywhere, no-store on FHIR responses -----------------------------------------


def test_every_response_says_nosniff(server: Server, api: httpx.Client) -> None:
    task_id = create_task(api, seed_task())
    responses = [
        api.get(f"/Task/{task_id}"),
        api.get("/Task", params={"_id": task_id}),
        api.post("/Task", json=seed_task()),
        httpx.get(f"{server.url}/metadata"),
        httpx.get(f"{server.url}/openapi.json"),
        httpx.get(f"{server.url}/.well-known/smart-configuration"),
        httpx.get(f"{server.url}/healthz"),
        httpx.post(f"{server.url}/auth/token/", data={"grant_type": "client_credentials"}),
        httpx.get(f"{server.url}/nowhere"),
    ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url


def test_fhir_responses_with_patient_data_are_no_store(api: httpx.Client) -> None:
    created = api.post("/Task", json=seed_task())
    task_id = created.headers["location"].rsplit("/", 1)[1]
    etag = created.headers["etag"]
    responses = [
        created,
        api.get(f"/Task/{task_id}"),
        api.get(f"/Task/{task_id}", headers={"If-None-Match": etag}),
        api.get("/Task", params={"_id": task_id}),
        api.post("/Task/_search", data={"_id": task_id}),
        api.get(f"/Task/{task_id}/_history"),
        api.get(f"/Task/{task_id}/_history/1"),
        api.put(f"/Task/{task_id}", json=seed_task(), headers={"If-Match": etag}),
        api.get("/Task/unknown-id"),
        api.get("/Task", params={"patinet": "x"}),
        httpx.get(f"{api.base_url}/Task"),  # no token: 401
    ]
    for response in responses:
        assert response.headers["cache-control"] == "no-store", (response.request.url, response)
    assert [r.status_code for r in responses[2:3]] == [304]  # revalidation still works


def test_health_probes_are_no_store(server: Server) -> None:
    for path in ("/healthz", "/readyz"):
        response = httpx.get(f"{server.url}{path}")
        assert (response.status_code, response.headers["cache-control"]) == (200, "no-store")


def test_the_token_endpoint_says_no_store(server: Server) -> None:
    creds = server.create_client()
    form = {"grant_type": "client_credentials", **creds}
    for data in (form, {**form, "client_secret": "wrong"}):
        response = httpx.post(f"{server.url}/auth/token/", data=data)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"


# --- the Host header -------------------------------------------------------------------------


def _raw_create(srv: Server, host: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps(SEED_CREATE).encode()
    head = (
        f"POST /Task HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {len(body)}\r\n" + (f"Authorization: Bearer {token}\r\n" if token else "")
    )
    with connect(srv) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        return read_response(sock)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example"])
def test_a_host_that_is_not_allowed_is_a_400_with_no_location(
    server: Server, token: str, host: str
) -> None:
    status, headers, body = _raw_create(server, host, token)
    assert status == 400
    assert "location" not in headers
    assert "evil" not in body.decode()
    _outcome(body, "invalid")


@pytest.mark.parametrize(
    "host",
    [
        "localhost:@evil.example",
        "localhost@evil.example",
        "[::1]@evil.example",
        "[::1]:8000@evil.example",
        "127.0.0.1:80:81",
        "localhost:80x",
        "localhost/evil",
        "[::1",
        "user@localhost",
    ],
)
def test_a_host_that_is_not_a_name_and_port_is_a_400_whatever_it_starts_with(
    server: Server, token: str, host: str
) -> None:
    status, headers, body = _raw_create(server, host, token)
    assert status == 400
    assert "location" not in headers
    assert "evil" not in body.decode()
    assert AllowedHosts.REFUSAL in json.dumps(_outcome(body, "invalid"))


def test_a_host_that_is_not_allowed_is_a_400_before_authentication(server: Server) -> None:
    status, headers, _ = _raw_create(server, "evil.example", None)
    assert (status, "www-authenticate" in headers) == (400, False)


def test_the_permalink_redirect_is_not_built_from_a_forged_host(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /permalinks/v1/abc HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        status, headers, _ = read_response(sock)
    assert status == 400 and "location" not in headers


def test_two_host_headers_are_a_400(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
        assert read_response(sock)[0] == 400


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8000", "LOCALHOST", "[::1]:8000"])
def test_the_loopback_names_are_allowed_by_default(server: Server, token: str, host: str) -> None:
    status, headers, _ = _raw_create(server, host, token)
    assert status == 201
    assert headers["location"].startswith(f"http://{host}/Task/")


def test_allowed_hosts_replace_the_default(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server("--allowed-hosts", "tasks.example.org,127.0.0.1")
    token = srv.token()
    status, headers, _ = _raw_create(srv, "tasks.example.org:8443", token)
    assert status == 201
    assert headers["location"].startswith("http://tasks.example.org:8443/Task/")
    assert _raw_create(srv, "localhost", token)[0] == 400


def test_with_a_base_url_the_location_is_the_base_urls_whatever_the_host(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server("--base-url", "https://tasks.example.org/fhir")
    status, headers, _ = _raw_create(srv, "evil.example", srv.token())
    assert status == 201
    assert headers["location"].startswith("https://tasks.example.org/fhir/Task/")


def test_allowed_hosts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARETASK_ALLOWED_HOSTS", "a.example, [::1] ,")
    settings = Settings.from_env()
    assert settings.allowed_hosts == ("a.example", "[::1]")
    assert settings.to_env()["CARETASK_ALLOWED_HOSTS"] == "a.example,[::1]"
    assert settings.accepted_hosts() == {"a.example", "::1"}


@pytest.mark.parametrize("host", ["example.org:443", "[::1]:8000", "127.0.0.1:80"])
def test_an_allowed_host_with_a_port_is_refused_at_start_up(host: str) -> None:
    with pytest.raises(BadSetting, match="has a port"):
        Settings(database_url="x", allowed_hosts=(host,))


@pytest.mark.parametrize("host", ["a b", "user@a.example", "a.example/x", "[::1]@b", "a.example:"])
def test_an_allowed_host_that_is_not_a_name_is_refused_at_start_up(host: str) -> None:
    with pytest.raises(BadSetting, match="not a host name"):
        Settings(database_url="x", allowed_hosts=(host,))


def test_the_default_hosts_are_loopback_and_the_bound_host_without_a_base_url() -> None:
    plain = Settings(database_url="sqlite:///x.db")
    assert plain.accepted_hosts("10.0.0.5") == {"localhost", "127.0.0.1", "::1", "10.0.0.5"}
    assert plain.accepted_hosts("0.0.0.0") == {"localhost", "127.0.0.1", "::1"}
    assert Settings(database_url="x", base_url="https://a.example").accepted_hosts() is None
    assert Settings(database_url="x", allowed_hosts=("*",)).accepted_hosts() is None
    with pytest.raises(BadSetting):
        Settings(database_url="x", allowed_hosts=("a b",))
