"""Server settings, from the command line or the environment (workers read the latter)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
_CPUS = os.cpu_count() or 1


class BadSetting(ValueError):
    """A setting out of its range: refused at start-up, not found out under load."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    base_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    token_ttl: int = 3600
    # audit records wait in memory at most this long before they are stored (http.audit)
    audit_flush_seconds: float = 0.5
    # how long a server may answer from its copy of a client's row: a revocation takes
    # effect on every server within this many seconds
    client_cache_seconds: float = 1.0
    # token requests (auth.throttle): failures allowed for one client id from one peer address,
    # and secret checks one peer address may start (counted until they succeed), per window
    token_failures_per_client: int = 5
    token_failures_per_address: int = 30
    token_failure_window: float = 60.0
    # secret checks (scrypt) run at once per process, and how many more may wait for a thread
    token_hash_threads: int = _CPUS
    token_hash_queue: int = 16
    # request limits checked before routing (http.limits); the body limit is above
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_url_bytes: int = 8 * 1024
    max_json_depth: int = 32
    # seconds a client may take over what it owes (http.timeouts): complete request headers,
    # counted from the connection's opening or the end of the previous response; the whole
    # body, counted from the end of its headers; and the idle wait between keep-alive requests
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: int = 5
    # seconds a search's statements may run before it is stopped with a 503
    search_timeout: float = 10.0
    # Host header names accepted (http.urls): without a base URL the Host decides the URLs
    # the server writes (Location, fullUrl, links, redirects). Empty: see accepted_hosts
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive = {
            "CARETASK_MAX_BODY_BYTES": self.max_body_bytes,
            "CARETASK_TOKEN_TTL": self.token_ttl,
            "CARETASK_AUDIT_FLUSH_SECONDS": self.audit_flush_seconds,
            "CARETASK_TOKEN_FAILURES_PER_CLIENT": self.token_failures_per_client,
            "CARETASK_TOKEN_FAILURES_PER_ADDRESS": self.token_failures_per_address,
            "CARETASK_TOKEN_FAILURE_WINDOW": self.token_failure_window,
            "CARETASK_TOKEN_HASH_THREADS": self.token_hash_threads,
            "CARETASK_MAX_HEADER_BYTES": self.max_header_bytes,
            "CARETASK_MAX_HEADERS": self.max_headers,
            "CARETASK_MAX_URL_BYTES": self.max_url_bytes,
            "CARETASK_MAX_JSON_DEPTH": self.max_json_depth,
            "CARETASK_HEADER_TIMEOUT": self.header_timeout,
            "CARETASK_BODY_TIMEOUT": self.body_timeout,
            "CARETASK_KEEPALIVE_TIMEOUT": self.keepalive_timeout,
            "CARETASK_SEARCH_TIMEOUT": self.search_timeout,
        }
        for name, value in positive.items():
            if not value > 0:
                raise BadSetting(f"{name} must be greater than 0, not {value}")
        if self.client_cache_seconds < 0:
            raise BadSetting("CARETASK_CLIENT_CACHE_SECONDS must not be negative")
        for host in self.allowed_hosts:
            if host != "*" and _bare_ipv6(host) is None:
                split = split_host(host)
                if split is None:
                    raise BadSetting(f"CARETASK_ALLOWED_HOSTS: '{host}' is not a host name")
                if split[1]:  # ports are not compared, so this entry could never match
                    raise BadSetting(f"CARETASK_ALLOWED_HOSTS: '{host}' has a port; give the name")
        if self.token_hash_queue < 0:
            raise BadSetting("CARETASK_TOKEN_HASH_QUEUE must not be negative")

    def accepted_hosts(self, bound_host: str | None = None) -> frozenset[str] | None:
        """The Host names a request may carry (lower case, without port or brackets), or
        None for any. By default, with a base URL any (the Host decides nothing), without
        one the loopback names and the host the server is bound to; "*" allows any."""
        hosts = self.allowed_hosts
        if not hosts:
            if self.base_url:
                return None
            hosts = LOOPBACK_HOSTS
            if bound_host and bound_host not in ("0.0.0.0", "::"):
                hosts = (*hosts, bound_host)
        if "*" in hosts:
            return None
        return frozenset(h.lower().strip("[]") for h in hosts)

    @classmethod
    def from_env(cls) -> Settings:
        from caretask.storage.urls import DEFAULT_URL

        def env(name: str, default: T, cast: Callable[[str], T]) -> T:
            raw = os.environ.get(f"CARETASK_{name}")
            try:
                return cast(raw) if raw else default
            except ValueError:
                raise BadSetting(f"CARETASK_{name}: '{raw}' is not a number") from None

        return cls(
            database_url=os.environ.get("CARETASK_DATABASE_URL") or DEFAULT_URL,
            base_url=(os.environ.get("CARETASK_BASE_URL") or "").rstrip("/") or None,
            max_body_bytes=env("MAX_BODY_BYTES", 1024 * 1024, int),
            token_ttl=env("TOKEN_TTL", 3600, int),
            audit_flush_seconds=env("AUDIT_FLUSH_SECONDS", 0.5, float),
            client_cache_seconds=env("CLIENT_CACHE_SECONDS", 1.0, float),
            token_failures_per_client=env("TOKEN_FAILURES_PER_CLIENT", 5, int),
            token_failures_per_address=env("TOKEN_FAILURES_PER_ADDRESS", 30, int),
            token_failure_window=env("TOKEN_FAILURE_WINDOW", 60.0, float),
            token_hash_threads=env("TOKEN_HASH_THREADS", _CPUS, int),
            token_hash_queue=env("TOKEN_HASH_QUEUE", 16, int),
            max_header_bytes=env("MAX_HEADER_BYTES", 16 * 1024, int),
            max_headers=env("MAX_HEADERS", 100, int),
            max_url_bytes=env("MAX_URL_BYTES", 8 * 1024, int),
            max_json_depth=env("MAX_JSON_DEPTH", 32, int),
            header_timeout=env("HEADER_TIMEOUT", 10.0, float),
            body_timeout=env("BODY_TIMEOUT", 30.0, float),
            keepalive_timeout=env("KEEPALIVE_TIMEOUT", 5, int),
            search_timeout=env("SEARCH_TIMEOUT", 10.0, float),
            allowed_hosts=host_list(os.environ.get("CARETASK_ALLOWED_HOSTS", "")),
        )

    def to_env(self) -> dict[str, str]:
        env = {
            "CARETASK_DATABASE_URL": self.database_url,
            "CARETASK_MAX_BODY_BYTES": str(self.max_body_bytes),
            "CARETASK_TOKEN_TTL": str(self.token_ttl),
            "CARETASK_AUDIT_FLUSH_SECONDS": str(self.audit_flush_seconds),
            "CARETASK_CLIENT_CACHE_SECONDS": str(self.client_cache_seconds),
            "CARETASK_TOKEN_FAILURES_PER_CLIENT": str(self.token_failures_per_client),
            "CARETASK_TOKEN_FAILURES_PER_ADDRESS": str(self.token_failures_per_address),
            "CARETASK_TOKEN_FAILURE_WINDOW": str(self.token_failure_window),
            "CARETASK_TOKEN_HASH_THREADS": str(self.token_hash_threads),
            "CARETASK_TOKEN_HASH_QUEUE": str(self.token_hash_queue),
            "CARETASK_MAX_HEADER_BYTES": str(self.max_header_bytes),
            "CARETASK_MAX_HEADERS": str(self.max_headers),
            "CARETASK_MAX_URL_BYTES": str(self.max_url_bytes),
            "CARETASK_MAX_JSON_DEPTH": str(self.max_json_depth),
            "CARETASK_HEADER_TIMEOUT": str(self.header_timeout),
            "CARETASK_BODY_TIMEOUT": str(self.body_timeout),
            "CARETASK_KEEPALIVE_TIMEOUT": str(self.keepalive_timeout),
            "CARETASK_SEARCH_TIMEOUT": str(self.search_timeout),
        }
        if self.base_url:
            env["CARETASK_BASE_URL"] = self.base_url
        if self.allowed_hosts:
            env["CARETASK_ALLOWED_HOSTS"] = ",".join(self.allowed_hosts)
        return env


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


# A Host header or an allowed host: a name (letters, digits, '-', '.') or a bracketed IPv6
# address, then an optional port. Nothing else, so that no userinfo, path or second address
# can ride behind a name that is allowed.
_HOST = re.compile(r"(?:([a-z0-9.-]+)|\[([0-9a-f:.]+)\])(?::([0-9]{1,5}))?", re.ASCII)


def split_host(text: str) -> tuple[str, str] | None:
    """A host's name (lower case, an IPv6 address without brackets) and port ("" if none),
    or None if it is not a name or bracketed IPv6 address with an optional port."""
    match = _HOST.fullmatch(text.lower())
    if match is None:
        return None
    name, ipv6, port = match.groups()
    return (name if name is not None else ipv6), port or ""


def _bare_ipv6(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def host_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of host names."""
    return tuple(h.strip() for h in text.split(",") if h.strip())
