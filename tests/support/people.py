"""People who sign in: users made with the CLI, and the authorization code flow with PKCE
driven as a browser would (the form read, its hidden fields posted back with the cookie).

Every password, code and refresh token made here is remembered for the log scan."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt

from tests.support.log_scan import remember, remember_sent
from tests.support.server import Server, run_cli

BOARD = "caretask-board"
PASSWORD = "correct horse battery"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def new_username() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


def create_user(
    server: Server,
    username: str | None = None,
    *,
    practitioner: str | None = None,
    teams: tuple[str, ...] = (),
    password: str = PASSWORD,
) -> dict[str, Any]:
    """A new user with `password` (given on standard input); its `users create` JSON."""
    username = username or new_username()
    practitioner = practitioner or f"Practitioner/{uuid.uuid4().hex}"
    team_args = [a for team in teams for a in ("--team", team)]
    out = run_cli(
        "users",
        "create",
        username,
        "--practitioner",
        practitioner,
        *team_args,
        "--password-stdin",
        "--database",
        server.database,
        cwd=server.workdir,
        input=password + "\n",
    )
    remember(password)
    created: dict[str, Any] = json.loads(out.stdout)
    return created


def pkce() -> tuple[str, str]:
    """A code verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def callback(server: Server) -> str:
    return f"{server.url}/app/callback"


@dataclass
class Flow:
    """One authorization request and the browser that carries it."""

    server: Server
    browser: httpx.Client
    params: dict[str, str]
    verifier: str

    def form(self) -> httpx.Response:
        return self.browser.get("/auth/authorize", params=self.params)

    def post(self, username: str, password: str, fields: dict[str, str]) -> httpx.Response:
        remember(password)
        return self.browser.post(
            "/auth/authorize", data={**fields, "username": username, "password": password}
        )

    def sign_in(self, username: str, password: str = PASSWORD) -> httpx.Response:
        """The form read and posted: the answer to the post."""
        page = self.form()
        assert page.status_code == 200, page.text
        return self.post(username, password, hidden_fields(page.text))

    def code(self, username: str, password: str = PASSWORD) -> str:
        answer = self.sign_in(username, password)
        assert answer.status_code == 303, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        code = query["code"][0]
        remember(code)
        return code

    def exchange(self, code: str, **changes: str) -> httpx.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.params["redirect_uri"],
            "client_id": self.params["client_id"],
            "code_verifier": self.verifier,
            **changes,
        }
        answer = httpx.post(f"{self.server.url}/auth/token/", data=data)
        remember_tokens(answer)
        return answer


def remember_tokens(answer: httpx.Response) -> None:
    if answer.status_code == 200:
        body = answer.json()
        remember(body.get("access_token"))
        remember(body.get("refresh_token"))


def hidden_fields(page: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(page)}


def flow(
    server: Server,
    *,
    client_id: str = BOARD,
    redirect_uri: str | None = None,
    scope: str = "user/Task.* user/Subscription.* openid fhirUser",
    **changes: str,
) -> Flow:
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": callback(server) if redirect_uri is None else redirect_uri,
        "scope": scope,
        "state": secrets.token_hex(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": server.url,
        **changes,
    }
    browser = httpx.Client(
        base_url=server.url, timeout=30, event_hooks={"request": [remember_sent]}
    )
    return Flow(server, browser, {k: v for k, v in params.items() if v != ""}, verifier)


def person_token(
    server: Server, username: str, password: str = PASSWORD, **kw: str
) -> dict[str, Any]:
    """The token response of a whole sign-in."""
    f = flow(server, **kw)
    answer = f.exchange(f.code(username, password))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def claims(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (the server verifies them)."""
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded
