"""The public base URL of this server, as configured or as the request shows it."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request


def base_url(request: Request) -> str:
    configured = request.app.state.settings.base_url
    return configured or str(request.base_url).rstrip("/")


def link_path(base: str) -> str:
    """The path part of the base, for the seed's host-relative paging links."""
    return urlsplit(base).path.rstrip("/")
