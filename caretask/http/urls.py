"""The public base URL of this server, as configured or as the request shows it, and the
Host names a request may show."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from caretask.config import split_host
from caretask.http.state import settings

_SEEN_BASES: dict[tuple[Any, ...], str] = {}
_SEEN_MAX = 256


def base_url(request: Request) -> str:
    configured = settings(request).base_url
    if configured:
        return configured
    # what Starlette's Request.base_url reads, as the key of what it made of it: building
    # the URL anew was a twentieth of a read's CPU
    scope = request.scope
    key = (
        scope.get("scheme"),
        scope.get("server"),
        scope.get("app_root_path", scope.get("root_path", "")),
        *(value for name, value in scope["headers"] if name == b"host"),
    )
    found = _SEEN_BASES.get(key)
    if found is None:
        if len(_SEEN_BASES) >= _SEEN_MAX:  # Host values are the client's: keep it bounded
            _SEEN_BASES.clear()
        found = _SEEN_BASES[key] = str(request.base_url).rstrip("/")
    return found


def link_path(base: str) -> str:
    """The path part of the base, for the seed's host-relative paging links."""
    return urlsplit(base).path.rstrip("/")


def host_name(value: bytes) -> str | None:
    """A Host header's name: lower case, without its port or an IPv6 address's brackets;
    None if the header is anything but a name or bracketed IPv6 address and a port."""
    split = split_host(value.decode("latin-1").strip())
    return split[0] if split is not None else None


class AllowedHosts:
    """The Host names a request may carry (checked with the limits, http.limits, before
    any endpoint): without a configured base URL the Host decides the URLs the server
    writes, so a forged one would put its host into Location, fullUrl and redirects. More
    than one Host is refused too. A request without one gets URLs from the address the
    server is bound to."""

    REFUSAL = "the Host header names a host this server does not answer for"
    _REMEMBERED = 64  # raw Host values found allowed, so that the common case is a lookup

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self._allowed: set[bytes] = set()

    def allow(self, headers: list[tuple[bytes, bytes]]) -> bool:
        sent = [value for name, value in headers if name == b"host"]
        if not sent:
            return True
        if len(sent) > 1:
            return False
        value = sent[0]
        if value in self._allowed:
            return True
        if host_name(value) not in self.names:
            return False
        if len(self._allowed) < self._REMEMBERED:
            self._allowed.add(value)
        return True
