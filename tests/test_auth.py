"""SPEC 3: client credentials, bearer tokens, SMART scopes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support.clients import create_task, within_client_cache_time
from tests.support.databases import signing_key
from tests.support.seed import SEED_CREATE
from tests.support.server import Server


def _token_response(server: Server, **form: str) -> httpx.Response:
    return httpx.post(f"{server.url}/auth/token/", data=form)


def _grant(server: Server, creds: dict[str, str], **form: str) -> httpx.Response:
    """A client-credentials request with this client's id and secret."""
    return _token_response(
        server,
        grant_type="client_credentials",
        client_id=creds["client_id"],
        client_secret=creds["client_secret"],
        **form,
    )


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert response.json()["resourceType"] == "OperationOutcome"


def test_client_credentials_grant_returns_a_bearer_token(server: Server) -> None:
    creds = server.create_client()
    response = _grant(server, creds)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "system/Task.read system/Task.write"


def test_http_basic_client_authentication_works_too(server: Server) -> None:
    creds = server.create_client()
    basic = base64.b64encode(f"{creds['client_id']}:{creds['client_secret']}".encode()).decode()
    response = httpx.post(
        f"{server.url}/auth/token/",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200


def test_wrong_secret_is_401_invalid_client(server: Server) -> None:
    creds = server.create_client()
    response = _token_response(
        server,
        grant_type="client_credentials",
        client_id=creds["client_id"],
        client_secret="wrong",
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_unknown_client_is_401_invalid_client(server: Server) -> None:
    response = _token_response(
        server, grant_type="client_credentials", client_id="nobody", client_secret="x"
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_other_grant_types_are_400_unsupported_grant_type(server: Server) -> None:
    response = _token_response(server, grant_type="password", username="a", password="b")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_missing_grant_type_is_400_invalid_request(server: Server) -> None:
    assert _token_response(server, client_id="a").json()["error"] == "invalid_request"


def test_requested_scope_narrows_the_token(server: Server) -> None:
    creds = server.create_client()
    response = _grant(server, creds, scope="system/Task.read")
    token = response.json()["access_token"]
    assert response.json()["scope"] == "system/Task.read"
    with server.client(token) as client:
        assert client.get("/Task").status_code == 200
        assert client.post("/Task", json=SEED_CREATE).status_code == 403


def test_requesting_more_scope_than_the_client_holds_is_invalid_scope(server: Server) -> None:
    creds = server.create_client(scope="system/Task.read")
    response = _grant(server, creds, scope="system/Task.write")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_missing_token_is_401_with_www_authenticate(server: Server) -> None:
    _assert_401(httpx.get(f"{server.url}/Task"))
    _assert_401(httpx.post(f"{server.url}/Task", json=SEED_CREATE))
    _assert_401(httpx.get(f"{server.url}/Task/x"))


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer  x y", "Basic abc", "Token abc", "bearer a b", "Bearer not.a.jwt"],
)
def test_malformed_authorization_is_401(server: Server, header: str) -> None:
    _assert_401(httpx.get(f"{server.url}/Task", headers={"Authorization": header}))


def _jwt(
    key: bytes,
    client_id: str,
    *,
    age: int = 0,
    ttl: int = 60,
    algorithm: str = "HS256",
    headers: dict[str, str] | None = None,
    **changes: str,
) -> str:
    """A token shaped like the server's own, issued `age` seconds ago; `changes` replace
    claims (iss, aud, scope...)."""
    now = int(time.time()) - age
    claims = {
        "iss": "caretask",
        "aud": "caretask-fhir",
        "sub": client_id,
        "scope": "system/Task.read",
        "iat": now,
        "exp": now + ttl,
        **changes,
    }
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _get_with(server: Server, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/Task", headers={"Authorization": f"Bearer {token}"})


def test_token_signed_with_the_real_key_and_valid_claims_is_accepted(server: Server) -> None:
    """The control for the forged and expired cases: only the key or the time differs."""
    creds = server.create_client()
    assert _get_with(server, _jwt(signing_key(server), creds["client_id"])).status_code == 200


def test_forged_token_is_401(server: Server) -> None:
    creds = server.create_client()
    _assert_401(_get_with(server, _jwt(b"guessed-secret-guessed-secret-32", creds["client_id"])))


def test_expired_token_is_401(server: Server) -> None:
    creds = server.create_client()
    _assert_401(_get_with(server, _jwt(signing_key(server), creds["client_id"], age=7200)))


def test_token_from_another_issuer_is_401(server: Server) -> None:
    creds = server.create_client()
    token = _jwt(signing_key(server), creds["client_id"], iss="https://elsewhere.example")
    _assert_401(_get_with(server, token))


def test_token_for_another_audience_is_401(server: Server) -> None:
    creds = server.create_client()
    _assert_401(_get_with(server, _jwt(signing_key(server), creds["client_id"], aud="other-api")))


@pytest.mark.filterwarnings("ignore:The HMAC key is")  # PyJWT, about our forged token
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_token_signed_with_the_real_key_under_another_algorithm_is_401(
    server: Server, algorithm: str
) -> None:
    creds = server.create_client()
    token = _jwt(signing_key(server), creds["client_id"], algorithm=algorithm)
    _assert_401(_get_with(server, token))


def test_token_claiming_an_asymmetric_algorithm_is_401(server: Server) -> None:
    """Algorithm confusion: an RS256 header over an HMAC signature made with our key."""
    creds = server.create_client()
    honest = _jwt(signing_key(server), creds["client_id"])
    _, payload, signature = honest.split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=").decode()
    _assert_401(_get_with(server, f"{header}.{payload}.{signature}"))


@pytest.mark.parametrize("scope", ["*/Task.read", "system/Ta*.*", "system/Task*", "system/*"])
def test_token_scopes_with_wildcards_in_the_wrong_place_grant_nothing(
    server: Server, scope: str
) -> None:
    creds = server.create_client()
    token = _jwt(signing_key(server), creds["client_id"], scope=scope)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.url}/Task", headers=headers).status_code == 403
    created = httpx.post(f"{server.url}/Task", json=SEED_CREATE, headers=headers)
    assert created.status_code == 403


def test_a_token_accepted_before_is_refused_once_it_expires(server: Server) -> None:
    """The server remembers tokens it has verified; expiry still applies to them."""
    creds = server.create_client()
    token = _jwt(signing_key(server), creds["client_id"], ttl=2)
    assert _get_with(server, token).status_code == 200
    time.sleep(2.1)
    _assert_401(_get_with(server, token))


def test_token_for_an_unknown_client_is_401(server: Server) -> None:
    _assert_401(_get_with(server, _jwt(signing_key(server), "ct_nobody")))


def test_unsigned_alg_none_token_is_401(server: Server) -> None:
    creds = server.create_client()

    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "iss": "caretask",
        "aud": "caretask-fhir",
        "sub": creds["client_id"],
        "scope": "system/*.*",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    _assert_401(_get_with(server, f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."))


def test_tampered_payload_is_401(server: Server, token: str) -> None:
    head, payload, signature = token.split(".")
    claims = base64.urlsafe_b64decode(payload + "==").replace(
        b"system/Task.read system/Task.write", b"system/*.*                        "
    )
    tampered = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
    headers = {"Authorization": f"Bearer {head}.{tampered}.{signature}"}
    _assert_401(httpx.get(f"{server.url}/Task", headers=headers))


def test_duplicated_authorization_headers_are_401(server: Server, token: str) -> None:
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    _assert_401(httpx.get(f"{server.url}/Task", headers=headers))


@pytest.mark.parametrize(
    ("scope", "can_read", "can_write"),
    [
        ("system/Task.read", True, False),
        ("system/Task.write", False, True),
        ("system/Task.*", True, True),
        ("system/*.*", True, True),
        ("system/Task.rs", True, False),
        ("system/Task.cu", False, True),
        ("system/Task.cruds", True, True),
    ],
)
def test_smart_scopes_grant_what_they_say(
    server: Server, scope: str, can_read: bool, can_write: bool
) -> None:
    with server.client(server.token(scope)) as client:
        assert client.get("/Task").status_code == (200 if can_read else 403)
        created = client.post("/Task", json=SEED_CREATE)
        assert created.status_code == (201 if can_write else 403)
        if not can_write:
            assert created.json()["issue"][0]["code"] == "forbidden"


def test_read_scope_cannot_update(server: Server, api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    with server.client(server.token("system/Task.read")) as client:
        assert client.get(f"/Task/{task_id}").status_code == 200
        assert client.put(f"/Task/{task_id}", json=SEED_CREATE).status_code == 403


def test_search_only_v2_scope_cannot_read_by_id(server: Server, api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    with server.client(server.token("system/Task.s")) as client:
        assert client.get("/Task", params={"_id": task_id}).status_code == 200
        assert client.get(f"/Task/{task_id}").status_code == 403


@pytest.mark.parametrize(
    "scope", ["system/Ta*.read", "system/Task.rw", "patient/Task.read", "system/Task.sr"]
)
def test_malformed_scopes_cannot_be_given_to_a_client(server: Server, scope: str) -> None:
    from tests.support.server import run_cli

    result = run_cli(
        "clients", "create", "bad", "--scope", scope, "--database", server.database, check=False
    )
    assert result.returncode != 0
    assert result.stdout == ""


def test_revoked_client_token_is_401(server: Server) -> None:
    from tests.support.server import run_cli

    creds = server.create_client()
    response = _grant(server, creds)
    token = response.json()["access_token"]
    with server.client(token) as client:
        assert client.get("/Task").status_code == 200
        run_cli("clients", "revoke", creds["client_id"], "--database", server.database)
        _assert_401(within_client_cache_time(lambda: client.get("/Task")))
    again = _grant(server, creds)
    assert again.status_code == 401


def test_tokens_survive_a_restart(make_server) -> None:  # type: ignore[no-untyped-def]
    first: Server = make_server()
    token = first.token()
    first.stop()
    second: Server = make_server(database=first.database, workdir=first.workdir)
    with second.client(token) as client:
        assert client.get("/Task").status_code == 200


def test_metadata_and_smart_configuration_need_no_token(server: Server) -> None:
    assert httpx.get(f"{server.url}/metadata").status_code == 200
    smart = httpx.get(f"{server.url}/.well-known/smart-configuration")
    assert smart.status_code == 200
    assert smart.json()["token_endpoint"] == f"{server.url}/auth/token/"


def _try(server: Server, client_id: str, secret: str) -> httpx.Response:
    return _token_response(
        server, grant_type="client_credentials", client_id=client_id, client_secret=secret
    )


def _assert_429(response: httpx.Response) -> None:
    assert response.status_code == 429
    assert response.json()["error"] == "temporarily_unavailable"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["cache-control"] == "no-store"


def test_wrong_secrets_for_one_client_from_one_address_are_slowed_with_429(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(env={"CARETASK_TOKEN_FAILURES_PER_CLIENT": "3"})
    target, other = srv.create_client(), srv.create_client()
    for _ in range(3):
        assert _try(srv, target["client_id"], "guess").status_code == 401
    _assert_429(_try(srv, target["client_id"], target["client_secret"]))
    assert _try(srv, other["client_id"], other["client_secret"]).status_code == 200


def test_failures_from_one_address_over_many_client_ids_are_slowed(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(env={"CARETASK_TOKEN_FAILURES_PER_ADDRESS": "4"})
    creds = srv.create_client()
    for i in range(4):
        assert _try(srv, f"sprayed-{i}", "guess").status_code == 401
    _assert_429(_try(srv, creds["client_id"], creds["client_secret"]))


def test_a_successful_token_request_clears_the_clients_failures(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(env={"CARETASK_TOKEN_FAILURES_PER_CLIENT": "3"})
    creds = srv.create_client()
    for _ in range(2):
        for _ in range(2):
            assert _try(srv, creds["client_id"], "typo").status_code == 401
        assert _try(srv, creds["client_id"], creds["client_secret"]).status_code == 200


def _try_from(server: Server, address: str, client_id: str, secret: str) -> httpx.Response:
    """A token request from another loopback address (any 127.x.y.z is this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport) as client:
        return client.post(
            f"{server.url}/auth/token/",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
            },
        )


def _server_cpu_seconds(server: Server) -> float:
    """User and system CPU time of the server process and its children (uvicorn workers)."""
    assert server.process is not None
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for process in [pid, *map(int, children)]:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def _wrong_secrets_at_once(
    server: Server, client_id: str, addresses: list[str]
) -> list[httpx.Response]:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "guess"}
    clients = [
        httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=a), timeout=60)
        for a in addresses
    ]
    try:
        return await asyncio.gather(
            *[c.post(f"{server.url}/auth/token/", data=form) for c in clients]
        )
    finally:
        for c in clients:
            await c.aclose()


def test_wrong_secrets_from_another_address_never_lock_a_client_out(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(env={"CARETASK_TOKEN_FAILURES_PER_CLIENT": "3"})
    victim = srv.create_client()
    attempts = [_try_from(srv, "127.0.0.2", victim["client_id"], "guess") for _ in range(8)]
    assert [r.status_code for r in attempts] == [401] * 3 + [429] * 5
    _assert_429(attempts[-1])
    real = _try_from(srv, "127.0.0.1", victim["client_id"], victim["client_secret"])
    assert real.status_code == 200


def test_concurrent_wrong_secrets_from_one_address_are_refused_before_hashing(make_server) -> None:  # type: ignore[no-untyped-def]
    from caretask.auth import secrets

    srv: Server = make_server(env={"CARETASK_TOKEN_FAILURES_PER_ADDRESS": "10"})
    victim = srv.create_client()
    started = time.process_time()
    secrets.verify_secret("guess", secrets.hash_secret("other"))
    one_check = (time.process_time() - started) / 2  # a hash and a check
    cpu_before = _server_cpu_seconds(srv)
    responses = asyncio.run(_wrong_secrets_at_once(srv, victim["client_id"], ["127.0.0.1"] * 150))
    cpu_used = _server_cpu_seconds(srv) - cpu_before
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) <= 10  # every attempt counts from its start, not after its hash
    assert statuses.count(401) + statuses.count(429) + statuses.count(503) == 150
    assert statuses.count(429) >= 150 - 10
    for refused in (r for r in responses if r.status_code in (429, 503)):
        assert refused.json()["error"] == "temporarily_unavailable"
        assert int(refused.headers["retry-after"]) >= 1
    # ten secret checks and 150 small requests, where 150 checks cost 150 * one_check
    assert cpu_used < 10 * one_check + 1.5, (cpu_used, one_check)


def test_a_flood_from_many_addresses_gets_503_past_the_hash_threads_and_queue(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server(
        env={"CARETASK_TOKEN_HASH_THREADS": "1", "CARETASK_TOKEN_HASH_QUEUE": "2"}
    )
    victim = srv.create_client()
    addresses = [f"127.0.1.{i}" for i in range(1, 41)]
    responses = asyncio.run(_wrong_secrets_at_once(srv, victim["client_id"], addresses))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {401, 503}
    busy = [r for r in responses if r.status_code == 503]
    assert busy, statuses
    assert busy[0].json()["error"] == "temporarily_unavailable"
    assert busy[0].headers["retry-after"] == "1"
    assert busy[0].headers["cache-control"] == "no-store"
    assert _grant(srv, victim).status_code == 200  # and it is over once the flood is


def test_token_requests_whose_secret_was_never_checked_leave_the_address_its_budget(
    make_server, fresh_database: str
) -> None:  # type: ignore[no-untyped-def]
    from tests.test_edge import _rename_table

    srv: Server = make_server(
        database=fresh_database, env={"CARETASK_TOKEN_FAILURES_PER_ADDRESS": "2"}
    )
    creds = srv.create_client()
    _rename_table(fresh_database, "clients", "clients_away")  # the database fails the lookup
    failed = [_try(srv, creds["client_id"], creds["client_secret"]) for _ in range(5)]
    assert all(r.status_code >= 500 for r in failed), [r.status_code for r in failed]
    _rename_table(fresh_database, "clients_away", "clients")
    assert _try(srv, creds["client_id"], creds["client_secret"]).status_code == 200
