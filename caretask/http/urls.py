"""The public base URL of this server, as configured or as the request shows it, and the
Host names a request may show."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from caretask.domain.outcome import outcome
from caretask.http.responses import fhir_response


def base_url(request: Request) -> str:
    configured = request.app.state.settings.base_url
    return configured or str(request.base_url).rstrip("/")


def link_path(base: str) -> str:
    """The path part of the base, for the seed's host-relative paging links."""
    return urlsplit(base).path.rstrip("/")


def host_name(value: bytes) -> str:
    """A Host header's name: lower case, without its port or an IPv6 address's brackets."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.partition(":")[0]


class AllowedHosts:
    """400 for a Host header whose name is not allowed (or more than one Host), before
    any endpoint: without a configured base URL the Host decides the URLs the server
    writes, so a forged one would put its host into Location, fullUrl and redirects.
    A request without a Host gets URLs from the address the server is bound to."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            sent = [value for name, value in scope["headers"] if name == b"host"]
            if len(sent) > 1 or (sent and host_name(sent[0]) not in self.hosts):
                text = "the Host header names a host this server does not answer for"
                await fhir_response(outcome("invalid", text), 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)
