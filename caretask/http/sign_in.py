"""GET and POST /auth/authorize: people sign in (OAuth 2.0 authorization code with PKCE, as
SMART App Launch's standalone launch asks).

GET checks the authorization request and shows the sign-in form; POST checks the form,
the password, and sends the browser back to the app with a code. A request that names an
unknown client, or a redirect URI the client did not register (compared as exact strings),
is answered with an error page and never redirected (RFC 6749 4.1.2.1): the redirect would
take the browser wherever the request says. Other errors go back to the app as `error=`.

The form is protected against cross-site requests by a double submit: a random value in a
SameSite=Strict, HttpOnly cookie, and in a hidden field the same value with an HMAC over
it and the authorization request's parameters, so that a form cannot be replayed for
another request or posted from another site. Password checks are throttled as the token
endpoint's secret checks are (auth.throttle): per peer address (the same budget), and per
address and username.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import Response

from caretask.auth import scopes
from caretask.auth import secrets as client_secrets
from caretask.auth.clients import BOARD_CLIENT_ID, board_client
from caretask.auth.throttle import Budget, Busy
from caretask.domain.people import USERNAME, redirect_origin
from caretask.http.negotiation import FORM, media_type, read_body
from caretask.http.state import Opened, app_state, opened
from caretask.http.urls import base_url, link_path
from caretask.storage.base import ClientRecord, Grant

log = logging.getLogger("caretask.auth")

MAX_FORM_BYTES = 64 * 1024
MAX_PARAMETER = 2048  # characters of one authorization request parameter
CSRF_COOKIE = "caretask_csrf"
# the parameters of an authorization request that the form carries (and the CSRF HMAC covers)
PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "aud",
)
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, unpadded
WRONG = "Wrong username or password."


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("caretask.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


@cache
def _css() -> tuple[str, str]:
    """The pages' stylesheet (inline: no request of its own) and its CSP hash source."""
    css = resources.files("caretask.web").joinpath("templates/auth/sign_in.css").read_text()
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return css, f"'sha256-{digest}'"


def _page(
    template: str, status: int, context: dict[str, Any], form_target: str | None = None
) -> Response:
    css, css_hash = _css()
    html = _templates().get_template(f"auth/{template}").render(css=css, **context)
    # no script at all; the form may post only here and be redirected only to the app
    form_action = "'self'" + (f" {form_target}" if form_target else "")
    policy = (
        f"default-src 'none'; style-src {css_hash}; form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return Response(
        html,
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": policy,
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "Referrer-Policy": "no-referrer",
        },
    )


def _error_page(status: int, title: str, message: str, advice: str) -> Response:
    return _page("error.html", status, {"title": title, "message": message, "advice": advice})


_GO_BACK = "Go back to the app you came from and start signing in again."


class _PageError(Exception):
    """An authorization request that cannot be sent back to its app: an error page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _RedirectError(Exception):
    """An authorization request refused back to its app (RFC 6749 4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description
        # set once the redirect URI is known good
        self.uri: str = ""
        self.state: str | None = None

    def response(self) -> Response:
        query = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            query["state"] = self.state
        return _redirect(self.uri, query, 302)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    client: ClientRecord
    redirect_uri: str
    scope: str  # what the token will hold
    state: str | None
    code_challenge: str
    params: dict[str, str]  # as sent: the form carries them back


async def find_client(state: Opened, client_id: str, base: str) -> ClientRecord | None:
    """A client that may sign people in: the built-in board, or a public client's row."""
    if client_id == BOARD_CLIENT_ID:
        return board_client(base)
    if not client_id.isprintable() or len(client_id) > 64:
        return None
    client = await state.storage.get_client(client_id)
    if client is None or client.revoked or not client.public:
        return None
    return client


def _single(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The parameters, and those sent more than once (an error: RFC 6749 3.1)."""
    seen: dict[str, str] = {}
    repeated = []
    for name, value in pairs:
        if name in seen and name in PARAMETERS:
            repeated.append(name)
        seen[name] = value
    return seen, repeated


async def _check(request: Request, pairs: list[tuple[str, str]]) -> AuthRequest:
    """The authorization request in `pairs`, checked: _PageError before its redirect URI
    is known good, _RedirectError after."""
    params, repeated = _single(pairs)
    for name in ("client_id", "redirect_uri"):
        if name in repeated:
            raise _PageError(f"the request repeats {name}")
    base = base_url(request)
    client_id = params.get("client_id", "")
    if not client_id:
        raise _PageError("the request names no client (client_id)")
    client = await find_client(opened(request), client_id, base)
    if client is None:
        raise _PageError("the request names a client that is not registered here")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri:
        raise _PageError("the request names no redirect_uri")
    if redirect_uri not in client.redirect_uris:
        raise _PageError("the redirect_uri is not one registered for this client")
    request.state.client_id = client.client_id
    try:
        return _check_rest(params, repeated, client, redirect_uri, base)
    except _RedirectError as error:
        error.uri, error.state = redirect_uri, params.get("state")
        raise


def _check_rest(
    params: dict[str, str],
    repeated: list[str],
    client: ClientRecord,
    redirect_uri: str,
    base: str,
) -> AuthRequest:
    """The rest of an authorization request whose client and redirect URI are good."""
    if repeated:
        raise _RedirectError("invalid_request", f"the request repeats {repeated[0]}")
    if any(len(params.get(name, "")) > MAX_PARAMETER for name in PARAMETERS):
        raise _RedirectError("invalid_request", f"a parameter is longer than {MAX_PARAMETER}")
    if params.get("response_type") != "code":
        raise _RedirectError("unsupported_response_type", "only response_type=code is supported")
    if params.get("code_challenge_method") != "S256":
        raise _RedirectError("invalid_request", "PKCE is required: code_challenge_method=S256")
    challenge = params.get("code_challenge", "")
    if not _CHALLENGE.fullmatch(challenge):
        raise _RedirectError(
            "invalid_request", "code_challenge must be the base64url SHA-256 of the verifier"
        )
    aud = params.get("aud")
    if aud is not None and aud.rstrip("/") != base:
        raise _RedirectError("invalid_request", "aud is not this FHIR server's base URL")
    scope = scopes.intersect(params.get("scope"), client.scope)
    if scope is None:
        raise _RedirectError("invalid_scope", "the scope names what this server does not grant")
    kept = {name: params[name] for name in PARAMETERS if name in params}
    return AuthRequest(client, redirect_uri, scope, params.get("state"), challenge, kept)


def _redirect(uri: str, query: dict[str, str], status: int) -> Response:
    separator = "&" if urlsplit(uri).query else "?"
    return Response(
        status_code=status,
        headers={
            "Location": f"{uri}{separator}{urlencode(query)}",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


def _origin(uri: str) -> str | None:
    return redirect_origin(uri)


def _mac(key: bytes, nonce: str, params: dict[str, str]) -> str:
    text = "\n".join([nonce, *(f"{n}={params.get(n, '')}" for n in PARAMETERS)])
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _describe(scope: str) -> list[str]:
    """The access a scope string asks for, in words for the sign-in page."""
    words = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
    out = []
    for resource in scopes.RESOURCES:
        letters = scopes.granted(scope, resource)
        if letters:
            verbs = ", ".join(words[c] for c in "cruds" if c in letters)
            out.append(f"{resource}s: {verbs}")
    if scopes.REFRESH_SCOPES & set(scope.split()):
        out.append("staying signed in (a refresh token)")
    return out


def _form(
    request: Request, auth: AuthRequest, status: int, username: str = "", error: str = ""
) -> Response:
    """The sign-in page, with a new CSRF value in its cookie and hidden field."""
    state = opened(request)
    nonce = secrets.token_urlsafe(24)
    csrf = f"{nonce}.{_mac(state.csrf_key, nonce, auth.params)}"
    base = base_url(request)
    context = {
        "client_name": auth.client.name,
        "access": _describe(auth.scope),
        "error": error,
        "action": link_path(base) + "/auth/authorize",
        "hidden": [*auth.params.items(), ("csrf", csrf)],
        "username": username,
        "redirect_host": urlsplit(auth.redirect_uri).netloc or auth.redirect_uri,
    }
    response = _page("sign_in.html", status, context, _origin(auth.redirect_uri))
    response.set_cookie(
        CSRF_COOKIE,
        nonce,
        max_age=3600,
        path=link_path(base) + "/auth",
        secure=base.startswith("https://"),
        httponly=True,
        samesite="strict",
    )
    return response


async def authorize_get(request: Request) -> Response:
    pairs = parse_qsl(request.url.query, keep_blank_values=True)
    try:
        auth = await _check(request, pairs)
    except _PageError as error:
        return _error_page(400, "Cannot sign in", error.message, _GO_BACK)
    except _RedirectError as error:
        return error.response()
    return _form(request, auth, 200)


def _csrf_ok(request: Request, sent: str, params: dict[str, str]) -> bool:
    nonce = request.cookies.get(CSRF_COOKIE, "")
    given_nonce, _, mac = sent.partition(".")
    if not nonce or not hmac.compare_digest(given_nonce.encode(), nonce.encode()):
        return False
    expected = _mac(opened(request).csrf_key, nonce, params)
    return hmac.compare_digest(mac.encode(), expected.encode())


def _too_many(wait: float) -> Response:
    response = _error_page(
        429,
        "Too many attempts",
        "Too many sign-in attempts from here.",
        f"Wait {max(1, math.ceil(wait))} seconds, then go back and try again.",
    )
    response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return response


async def authorize_post(request: Request) -> Response:
    if media_type(request) != FORM:
        return _error_page(400, "Cannot sign in", f"the form must be sent as {FORM}", _GO_BACK)
    raw = await read_body(request, MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return _error_page(400, "Cannot sign in", "the form could not be read", _GO_BACK)
    try:
        auth = await _check(request, [(n, v) for n, v in pairs if n in PARAMETERS])
    except _PageError as error:
        return _error_page(400, "Cannot sign in", error.message, _GO_BACK)
    except _RedirectError as error:
        return error.response()
    form = dict(pairs)
    if not _csrf_ok(request, form.get("csrf", ""), auth.params):
        return _error_page(
            400,
            "Cannot sign in",
            "The sign-in form expired or did not come from this server.",
            _GO_BACK,
        )
    username, password = form.get("username", "")[:64], form.get("password", "")[:1000]
    return await _sign_in(request, auth, username, password)


async def _sign_in(request: Request, auth: AuthRequest, username: str, password: str) -> Response:
    state = opened(request)
    address = request.client.host if request.client else "unknown"
    pair = f"{address} {username}"
    now = time.monotonic()
    # both spent before the (slow) password check, so that guesses sent at once cannot all
    # be checked before the first failure is counted; given back on success
    budgets = (
        (state.failed_sign_ins, pair),
        (state.user_sign_ins, username),
        (state.address_checks, address),
    )
    spent: list[tuple[Budget, str]] = []
    for budget, key in budgets:
        wait = budget.spend(key, now)
        if wait is not None:
            for taken, taken_key in spent:
                taken.refund(taken_key, now)
            return _too_many(wait)
        spent.append((budget, key))
    user = None
    verified: bool | None = None
    try:
        if USERNAME.fullmatch(username):
            user = await state.storage.get_user(username)
        stored = user.password_hash if user is not None and not user.disabled else None
        verified = await state.hash_pool.run(client_secrets.verify_secret, password, stored)
    except Busy:
        response = _error_page(
            503, "Busy", "Too many sign-ins at once.", "Wait a second, then try again."
        )
        response.headers["Retry-After"] = "1"
        return response
    finally:
        if verified is None:  # never checked: nothing guessed
            for budget, key in budgets:
                budget.refund(key, time.monotonic())
    now = time.monotonic()
    if not verified or user is None:  # its spending stands
        return _form(request, auth, 401, username if USERNAME.fullmatch(username) else "", WRONG)
    state.address_checks.refund(address, now)
    state.user_sign_ins.refund(username, now)
    state.failed_sign_ins.clear(pair)
    request.state.audit_user = (user.username, user.fhir_user)
    code = secrets.token_urlsafe(32)
    grant = Grant(
        auth.client.client_id,
        user.username,
        auth.scope,
        family=secrets.token_hex(16),
        redirect_uri=auth.redirect_uri,
        code_challenge=auth.code_challenge,
    )
    expires = int(time.time()) + app_state(request).settings.auth_code_ttl
    await state.storage.save_code(digest(code), grant, expires)
    query = {"code": code}
    if auth.state is not None:
        query["state"] = auth.state
    return _redirect(auth.redirect_uri, query, 303)


def digest(secret: str) -> str:
    """How a code or refresh token is stored: 256 random bits need no slow hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def s256(verifier: str) -> str:
    """PKCE's S256 (RFC 7636 4.2): base64url(SHA-256(verifier)), unpadded."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
