"""People sign in: the authorization code flow with PKCE against a real server, on both
engines (the codes and refresh tokens live in the database), and the tokens it gives."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from tests.support.clients import within_client_cache_time
from tests.support.log_scan import remember
from tests.support.people import (
    BOARD,
    PASSWORD,
    callback,
    claims,
    create_user,
    flow,
    hidden_fields,
    new_username,
    person_token,
    remember_tokens,
)
from tests.support.seed import seed_task
from tests.support.server import Server, run_cli
from tests.support.subscriptions import subscription_body


def _query(response: httpx.Response) -> dict[str, list[str]]:
    return parse_qs(urlsplit(response.headers["location"]).query)


def _refresh(server: Server, token: str, client_id: str = BOARD) -> httpx.Response:
    answer = httpx.post(
        f"{server.url}/auth/token/",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
    )
    remember_tokens(answer)
    return answer


def _tasks(server: Server, token: str) -> httpx.Response:
    with server.client(token) as api:
        return api.get("/Task", params={"_count": "1"})


# --- the whole flow --------------------------------------------------------------------------


def test_the_code_flow_gives_a_token_that_names_the_person(server: Server) -> None:
    user = create_user(server, practitioner="Practitioner/p-1", teams=("Group/g-1",))
    body = person_token(server, user["username"])
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "user/Task.* user/Subscription.*"  # no id token: no openid
    assert (body["fhirUser"], body["username"], body["teams"]) == (
        "Practitioner/p-1",
        user["username"],
        ["Group/g-1"],
    )
    token = claims(body["access_token"])
    assert (token["sub"], token["client_id"], token["fhirUser"], token["teams"]) == (
        user["username"],
        BOARD,
        "Practitioner/p-1",
        ["Group/g-1"],
    )
    assert _tasks(server, body["access_token"]).status_code == 200


def test_signing_in_redirects_with_303_to_the_callback_with_code_and_state(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    answer = f.sign_in(user["username"])
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(callback(server) + "?code=")
    assert _query(answer)["state"] == [f.params["state"]]
    assert answer.headers["cache-control"] == "no-store"


def test_the_token_response_is_not_cached(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    answer = f.exchange(f.code(user["username"]))
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["pragma"] == "no-cache"


# --- the sign-in page ----------------------------------------------------------------------


def test_the_sign_in_page_is_labelled_and_names_the_app_and_access(server: Server) -> None:
    page = flow(server).form()
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<label for="username">Username</label>' in page.text
    assert '<label for="password">Password</label>' in page.text
    assert 'type="submit"' in page.text
    assert "caretask task board" in page.text
    assert "Tasks: create, read, update, delete, search" in page.text
    assert "<script" not in page.text


def test_the_sign_in_page_cannot_be_framed_cached_or_run_scripts(server: Server) -> None:
    page = flow(server).form()
    policy = page.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'; style-src 'sha256-")
    assert "frame-ancestors 'none'" in policy
    assert f"form-action 'self' {server.url}" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


def test_the_csrf_cookie_is_strict_http_only_and_scoped_to_auth(server: Server) -> None:
    cookie = flow(server).form().headers["set-cookie"]
    assert cookie.startswith("caretask_csrf=")
    for part in ("HttpOnly", "Path=/auth", "SameSite=strict"):
        assert part in cookie


# --- wrong credentials, disabled users ---------------------------------------------------------


def test_a_wrong_password_is_the_form_again_with_401_and_the_username_kept(
    server: Server,
) -> None:
    user = create_user(server)
    answer = flow(server).sign_in(user["username"], "not the password")
    assert answer.status_code == 401
    assert "Wrong username or password." in answer.text
    assert f'value="{user["username"]}"' in answer.text
    assert "location" not in answer.headers


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(server: Server) -> None:
    answer = flow(server).sign_in(new_username(), "not the password")
    assert answer.status_code == 401
    assert "Wrong username or password." in answer.text


def test_a_disabled_user_cannot_sign_in(server: Server) -> None:
    user = create_user(server)
    run_cli("users", "disable", user["username"], "--database", server.database)
    answer = flow(server).sign_in(user["username"])
    assert answer.status_code == 401
    assert "Wrong username or password." in answer.text


def test_a_disabled_users_token_is_refused_within_the_cache_time(server: Server) -> None:
    user = create_user(server)
    token = person_token(server, user["username"])["access_token"]
    assert _tasks(server, token).status_code == 200
    run_cli("users", "disable", user["username"], "--database", server.database)
    refused = within_client_cache_time(lambda: _tasks(server, token))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")


def test_a_disabled_users_refresh_token_is_refused(server: Server) -> None:
    user = create_user(server)
    refresh = person_token(server, user["username"])["refresh_token"]
    run_cli("users", "disable", user["username"], "--database", server.database)
    assert _refresh(server, refresh).json()["error"] == "invalid_grant"


def test_a_new_password_replaces_the_old(server: Server) -> None:
    user = create_user(server)
    run_cli(
        "users", "set-password", user["username"], "--password-stdin",
        "--database", server.database, input="a brand new password\n",
    )  # fmt: skip
    assert flow(server).sign_in(user["username"]).status_code == 401
    assert flow(server).sign_in(user["username"], "a brand new password").status_code == 303


# --- refusals before the redirect URI is known good: a page, never a redirect ------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"redirect_uri": "https://evil.example/app/callback"},
        {"redirect_uri": ""},
        {"client_id": "nobody"},
        {"client_id": ""},
    ],
    ids=["mismatched-redirect", "no-redirect", "unknown-client", "no-client"],
)
def test_a_bad_client_or_redirect_uri_is_a_400_page_without_redirect(
    server: Server, changes: dict[str, str]
) -> None:
    f = flow(server, **changes)
    answer = f.form()
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "Cannot sign in" in answer.text


def test_a_redirect_uri_that_only_starts_like_the_registered_one_is_refused(
    server: Server,
) -> None:
    answer = flow(server, redirect_uri=callback(server) + "/../evil").form()
    assert answer.status_code == 400
    assert "location" not in answer.headers


# --- refusals sent back to the app ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "system/Task.read"}, "invalid_scope"),
        ({"aud": "https://elsewhere.example/fhir"}, "invalid_request"),
    ],
    ids=["plain-pkce", "no-pkce", "bad-challenge", "implicit", "system-scope", "other-aud"],
)
def test_a_bad_request_goes_back_to_the_app_with_error_and_state(
    server: Server, changes: dict[str, str], error: str
) -> None:
    f = flow(server, **changes)
    answer = f.form()
    assert answer.status_code == 302
    assert answer.headers["location"].startswith(callback(server) + "?")
    query = _query(answer)
    assert query["error"] == [error]
    assert query["state"] == [f.params["state"]]


# --- CSRF ----------------------------------------------------------------------------------------


def test_a_post_without_the_csrf_field_is_a_400_page(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    fields = hidden_fields(f.form().text)
    del fields["csrf"]
    answer = f.post(user["username"], PASSWORD, fields)
    assert answer.status_code == 400
    assert "did not come from this server" in answer.text


def test_a_post_without_the_csrf_cookie_is_a_400_page(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    fields = hidden_fields(f.form().text)
    f.browser.cookies.clear()
    answer = f.post(user["username"], PASSWORD, fields)
    assert answer.status_code == 400


def test_a_csrf_field_of_another_request_is_refused(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    fields = hidden_fields(f.form().text)
    fields["state"] = "changed"  # the HMAC covers the request's parameters
    answer = f.post(user["username"], PASSWORD, fields)
    assert answer.status_code == 400


# --- the token exchange ----------------------------------------------------------------------


def test_a_wrong_verifier_is_invalid_grant(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    answer = f.exchange(f.code(user["username"]), code_verifier="x" * 64)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_a_code_is_refused_the_second_time(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    code = f.code(user["username"])
    assert f.exchange(code).status_code == 200
    again = f.exchange(code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_a_code_used_twice_revokes_the_refresh_token_it_gave(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    code = f.code(user["username"])
    refresh = f.exchange(code).json()["refresh_token"]
    f.exchange(code)
    assert _refresh(server, refresh).json()["error"] == "invalid_grant"


def test_a_code_given_to_another_client_is_refused(server: Server) -> None:
    user = create_user(server)
    app = _public_client(server, "https://app.example.org/cb")
    f = flow(server)
    answer = f.exchange(f.code(user["username"]), client_id=app["client_id"])
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_a_code_with_another_redirect_uri_is_refused(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    answer = f.exchange(f.code(user["username"]), redirect_uri=server.url + "/app/other")
    assert answer.json()["error"] == "invalid_grant"


def test_an_expired_code_is_refused(make_server, fresh_database: str) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database=fresh_database, env={"CARETASK_AUTH_CODE_TTL": "1"})
    user = create_user(server)
    f = flow(server)
    code = f.code(user["username"])
    time.sleep(2.1)
    answer = f.exchange(code)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_a_code_exchange_without_a_verifier_is_invalid_request(server: Server) -> None:
    user = create_user(server)
    f = flow(server)
    answer = f.exchange(f.code(user["username"]), code_verifier="")
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_request",
        "error_description": "code_verifier is required",
    }


# --- refresh tokens ----------------------------------------------------------------------------


def test_a_refresh_gives_a_new_access_and_refresh_token(server: Server) -> None:
    user = create_user(server)
    first = person_token(server, user["username"])
    answer = _refresh(server, first["refresh_token"])
    assert answer.status_code == 200
    body = answer.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["fhirUser"] == first["fhirUser"]
    assert _tasks(server, body["access_token"]).status_code == 200


def test_a_used_refresh_token_is_refused_and_revokes_its_successor(server: Server) -> None:
    user = create_user(server)
    first = person_token(server, user["username"])["refresh_token"]
    second = _refresh(server, first).json()["refresh_token"]
    reused = _refresh(server, first)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert _refresh(server, second).json()["error"] == "invalid_grant"


def test_a_refresh_token_of_another_client_is_refused(server: Server) -> None:
    user = create_user(server)
    refresh = person_token(server, user["username"])["refresh_token"]
    assert _refresh(server, refresh, client_id="someone-else").json()["error"] == "invalid_grant"
    # and it is not used up: its own app's next refresh still works (no reuse detected)
    assert _refresh(server, refresh).status_code == 200


def test_a_public_app_gets_a_refresh_token_only_with_offline_access(server: Server) -> None:
    user = create_user(server)
    app = _public_client(server, "https://app.example.org/cb")
    uri = "https://app.example.org/cb"
    plain = person_token(server, user["username"], client_id=app["client_id"], redirect_uri=uri,
                         scope="user/Task.rs")  # fmt: skip
    offline = person_token(server, user["username"], client_id=app["client_id"],
                           redirect_uri=uri, scope="user/Task.rs offline_access")  # fmt: skip
    assert "refresh_token" not in plain
    assert "refresh_token" in offline


# --- public apps and scopes ----------------------------------------------------------------------


def _public_client(server: Server, *uris: str, scope: str = "user/Task.*") -> dict[str, str]:
    args = [a for uri in uris for a in ("--redirect-uri", uri)]
    out = run_cli(
        "clients", "create", "an app", "--public", *args, "--scope", scope,
        "--database", server.database,
    )  # fmt: skip
    created: dict[str, str] = json.loads(out.stdout)
    return created


def test_a_public_client_is_created_without_a_secret(server: Server) -> None:
    app = _public_client(server, "https://app.example.org/cb")
    assert set(app) == {"client_id", "scope", "redirect_uris"}
    assert app["redirect_uris"] == ["https://app.example.org/cb"]


def test_a_public_app_gets_the_scopes_it_asked_for_as_far_as_it_holds_them(
    server: Server,
) -> None:
    user = create_user(server)
    app = _public_client(server, "https://app.example.org/cb", scope="user/Task.rs")
    body = person_token(
        server, user["username"], client_id=app["client_id"],
        redirect_uri="https://app.example.org/cb", scope="user/Task.cruds openid",
    )  # fmt: skip
    assert body["scope"] == "user/Task.rs"


def test_a_read_only_person_cannot_create_a_task(server: Server) -> None:
    user = create_user(server)
    app = _public_client(server, "https://app.example.org/cb", scope="user/Task.rs")
    token = person_token(
        server, user["username"], client_id=app["client_id"],
        redirect_uri="https://app.example.org/cb", scope="user/Task.rs",
    )["access_token"]  # fmt: skip
    with server.client(token) as api:
        answer = api.post("/Task", json={"resourceType": "Task", "status": "requested"})
    assert answer.status_code == 403
    diagnostics = answer.json()["issue"][0]["diagnostics"]
    assert diagnostics == "this needs the scope user/Task.write (or user/Task.c)"


def test_a_revoked_public_client_can_no_longer_sign_people_in(server: Server) -> None:
    app = _public_client(server, "https://app.example.org/cb")
    run_cli("clients", "revoke", app["client_id"], "--database", server.database)
    answer = flow(server, client_id=app["client_id"], redirect_uri="https://app.example.org/cb")
    assert answer.form().status_code == 400


def test_a_new_password_ends_the_persons_sessions(server: Server) -> None:
    user = create_user(server)
    signed_in = person_token(server, user["username"])
    run_cli(
        "users",
        "set-password",
        user["username"],
        "--password-stdin",
        "--database",
        server.database,
        input="a brand new password\n",
    )
    remember("a brand new password")
    refused = _refresh(server, signed_in["refresh_token"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


# --- throttling ---------------------------------------------------------------------------------


def test_sign_in_failures_are_throttled_with_429(make_server, fresh_database: str) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database=fresh_database, env={"CARETASK_TOKEN_FAILURES_PER_CLIENT": "2"})
    user = create_user(server)
    f = flow(server)
    statuses = [f.sign_in(user["username"], "wrong password").status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    refused = f.sign_in(user["username"])  # the right password waits too
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1


def test_guesses_sent_at_once_are_checked_no_more_than_the_limit(
    make_server,  # type: ignore[no-untyped-def]
    fresh_database: str,
) -> None:
    """The budget is spent before each (slow) password check: ten wrong passwords posted
    at once for one user from one address get at most the limit of checks (401), the rest
    a 429 (or a 503 when the hashing threads are full)."""
    env = {"CARETASK_TOKEN_FAILURES_PER_CLIENT": "3"}
    server = make_server(database=fresh_database, env=env)
    user = create_user(server)
    flows = [flow(server) for _ in range(10)]
    forms = [hidden_fields(f.form().text) for f in flows]

    def guess(index: int) -> httpx.Response:
        return flows[index].post(user["username"], "wrong!", forms[index])

    with ThreadPoolExecutor(10) as pool:
        statuses = Counter(answer.status_code for answer in pool.map(guess, range(10)))
    assert statuses[401] <= 3, statuses
    assert set(statuses) <= {401, 429, 503}, statuses


# --- discovery ---------------------------------------------------------------------------------


def test_smart_configuration_advertises_the_code_flow(server: Server) -> None:
    config = httpx.get(f"{server.url}/.well-known/smart-configuration").json()
    assert config["authorization_endpoint"] == f"{server.url}/auth/authorize"
    assert config["token_endpoint"] == f"{server.url}/auth/token/"
    assert config["grant_types_supported"] == [
        "authorization_code", "client_credentials", "refresh_token",
    ]  # fmt: skip
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["response_types_supported"] == ["code"]
    for capability in ("launch-standalone", "client-public", "permission-v2", "permission-user"):
        assert capability in config["capabilities"]
    assert "context-standalone-patient" not in config["capabilities"]
    assert "user/Task.cruds" in config["scopes_supported"]


def test_the_capability_statement_names_the_authorize_endpoint(server: Server) -> None:
    statement = httpx.get(f"{server.url}/metadata").json()
    uris = statement["rest"][0]["security"]["extension"][0]["extension"]
    assert {"url": "authorize", "valueUri": f"{server.url}/auth/authorize"} in uris


# --- the board's live updates ----------------------------------------------------------------


def test_a_board_token_binds_a_websocket_subscription_and_hears_a_change(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    server = make_server(database=fresh_database)  # its own: other modules count subscriptions
    user = create_user(server)
    token = person_token(server, user["username"])["access_token"]
    patient = f"Patient/board-{time.monotonic_ns()}"
    headers = {"Content-Type": "application/fhir+json"}
    with server.client(token) as api:
        body = subscription_body(None, f"patient={patient}", channel="websocket")
        created = api.post("/Subscription", json=body, headers=headers)
        assert created.status_code == 201, created.text
        bound = api.post(f"/Subscription/{created.json()['id']}/$get-ws-binding-token")
        assert bound.status_code == 200
        parameters = {p["name"]: p for p in bound.json()["parameter"]}
        with connect(parameters["websocket-url"]["valueUrl"], open_timeout=5) as socket:
            socket.send(f"bind-with-token: {parameters['token']['valueString']}")
            assert b"handshake" in orjson.dumps(orjson.loads(socket.recv(timeout=5)))
            task = seed_task(requester=None, **{"for": {"reference": patient}})
            assert api.post("/Task", json=task).status_code == 201
            notification = orjson.loads(socket.recv(timeout=5))
    assert b"event-notification" in orjson.dumps(notification)


def test_guesses_at_one_person_from_many_addresses_are_bounded_too(
    make_server,  # type: ignore[no-untyped-def]
    fresh_database: str,
) -> None:
    """Passwords are not 256-bit secrets: besides the budget per address, one username has
    CARETASK_SIGN_IN_FAILURES_PER_USER failures an hour from any address (loopback has
    many: 127.0.0.0/8), then 429, the right password included."""
    env = {"CARETASK_SIGN_IN_FAILURES_PER_USER": "3"}
    server = make_server(database=fresh_database, env=env)
    user = create_user(server)
    statuses = []
    for last in range(2, 7):  # a new peer address each time
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{last}")
        f = flow(server)
        f.browser = httpx.Client(base_url=server.url, timeout=30, transport=transport)
        statuses.append(f.sign_in(user["username"], "wrong guess").status_code)
    assert statuses == [401, 401, 401, 429, 429]
