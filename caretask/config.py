"""Server settings, each declared once: a field of Settings below, with its type, default,
bounds, one-line help and, if it has one, its `caretask serve` flag.

Everything else is derived from those declarations: the environment variable (`CARETASK_`
and the field's name in capitals), reading the environment (`Settings.from_env`) and
writing it for worker processes (`Settings.to_env`), the serve command's flags
(`caretask.cli`), validation (BadSetting, at start-up) and the README's table of settings
(`readme_table`, which tests/test_readme.py holds the README to). Adding a setting is one
field here, and its use.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from caretask.domain.profiles import DEFAULT as DEFAULT_PROFILE
from caretask.domain.profiles import PROFILES, Profile

T = TypeVar("T")
# here, not in caretask.storage: reading the settings must not load the database drivers
DEFAULT_URL = "sqlite:///./caretask.db"
DEFAULT_POOL_SIZE = 10  # PostgreSQL connections per pool unless the caller says
_CPUS = os.cpu_count() or 1
_DECLARED = "caretask.setting"  # the metadata key of a field's declaration


class BadSetting(ValueError):
    """A setting out of its range: refused at start-up, not found out under load."""


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How values of a type are written as text (the environment, the command line)."""

    # text -> value; ValueError if the text is not one. A number's is int or float itself,
    # so that argparse names the type in its message ("invalid int value")
    parse: Callable[[str], T]
    text: Callable[[T], str]  # value -> text that `parse` reads back as the same value
    number: bool = False  # the command line parses it (numbers) or hands over the text


def host_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of host names."""
    return tuple(h.strip() for h in text.split(",") if h.strip())


def _base_url(text: str) -> str | None:
    return text.rstrip("/") or None


INT: Kind[int] = Kind(int, str, number=True)
FLOAT: Kind[float] = Kind(float, str, number=True)
TEXT: Kind[str] = Kind(str, str)
URL: Kind[str | None] = Kind(_base_url, lambda value: value or "")
HOSTS: Kind[tuple[str, ...]] = Kind(host_list, ",".join)


def _profile(text: str) -> Profile:
    # read as given: known_profile, its check, names the allowed values when it is not one
    return cast(Profile, text)


PROFILE: Kind[Profile] = Kind(_profile, str)


# Checks: a problem as the rest of a sentence that begins with the setting's name (its
# environment variable, or the flag it came from), or None.
Check = Callable[[Any], "str | None"]


def positive(value: float) -> str | None:
    return None if value > 0 else f" must be greater than 0, not {value}"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else " must not be negative"


def log_format(value: str) -> str | None:
    from caretask.logs import FORMATS

    if value in FORMATS:
        return None
    return f" must be one of {', '.join(FORMATS)}, not '{value[:40]}'"


METRICS_OFF, METRICS_OPEN = "off", "open"
MIN_METRICS_TOKEN = 16


def metrics_mode(value: str) -> str | None:
    if value in (METRICS_OFF, METRICS_OPEN) or len(value) >= MIN_METRICS_TOKEN:
        return None
    # the value may be a (short) secret: not repeated
    return (
        f" must be {METRICS_OFF}, {METRICS_OPEN}, or a bearer token of at least "
        f"{MIN_METRICS_TOKEN} characters"
    )


def known_profile(value: str) -> str | None:
    if value in PROFILES:
        return None
    return f" must be one of {', '.join(PROFILES)}, not '{value[:40]}'"


def host_names(hosts: tuple[str, ...]) -> str | None:
    for host in hosts:
        if host != "*" and _bare_ipv6(host) is None:
            split = split_host(host)
            if split is None:
                return f": '{host}' is not a host name"
            if split[1]:  # ports are not compared, so this entry could never match
                return f": '{host}' has a port; give the name"
    return None


def origins(values: tuple[str, ...]) -> str | None:
    """Browser origins as a browser sends them in Origin: scheme://host[:port], no path."""
    for origin in values:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            return f": '{origin}' is not an origin (scheme://host[:port], no path), nor '*'"
    return None


def url_prefixes(values: tuple[str, ...]) -> str | None:
    for prefix in values:
        if not prefix.startswith(("http://", "https://")) or len(prefix) < len("http://x"):
            return f": '{prefix[:80]}' is not the start of an http:// or https:// URL"
    return None


_ORIGIN = re.compile(r"[a-z][a-z0-9+.\-]*://[^/?#\s,]+", re.IGNORECASE)


@dataclass(frozen=True)
class Declared:
    """One setting's declaration, less what the dataclass field holds (name, type, default)."""

    kind: Kind[Any]
    help: str  # one line: the flag's help and the README's
    check: Check | None = None
    flag: str | None = None  # its option of `caretask serve`, if it has one
    shown: str | None = None  # its default in words, where the value is not the point


def _setting(
    default: T,
    kind: Kind[T],
    help: str,
    *,
    check: Callable[[T], str | None] | None = None,
    flag: str | None = None,
    shown: str | None = None,
) -> T:
    declared = Declared(kind, help, check, flag, shown)
    # a dataclass field in the place of the default: the field keeps the default, and the
    # declaration as its metadata
    return dataclasses.field(default=default, metadata={_DECLARED: declared})


@dataclass(frozen=True)
class Setting:
    """A declared setting as the readers of the declarations see it."""

    name: str  # the Settings attribute
    default: Any
    declared: Declared

    @property
    def env(self) -> str:
        return f"CARETASK_{self.name.upper()}"

    @property
    def kind(self) -> Kind[Any]:
        return self.declared.kind

    @property
    def shown_default(self) -> str:
        return self.declared.shown or self.kind.text(self.default)

    def problem(self, value: Any, source: str | None = None) -> str | None:
        """What is wrong with a value, as a sentence naming `source` (default: the
        environment variable), or None."""
        check = self.declared.check
        rest = check(value) if check is not None else None
        return None if rest is None else f"{source or self.env}{rest}"

    def read(self, environ: Mapping[str, str]) -> Any:
        """The value in the environment; its default if unset or empty."""
        raw = environ.get(self.env)
        if not raw:
            return self.default
        try:
            return self.kind.parse(raw)
        except ValueError:
            raise BadSetting(f"{self.env}: '{raw}' is not a number") from None


@dataclass(frozen=True)
class Settings:
    database_url: str = _setting(
        DEFAULT_URL,
        TEXT,
        "database URL: sqlite:///PATH or postgresql://USER@HOST:PORT/NAME",
        flag="--database",
    )
    # a worker's PostgreSQL pool: see the README's "Running in production" for the sum
    # that has to stay below the database's max_connections
    db_pool_size: int = _setting(
        DEFAULT_POOL_SIZE, INT, "PostgreSQL connections per worker's pool", check=positive
    )
    base_url: str | None = _setting(
        None,
        URL,
        "public URL for Location and fullUrl",
        flag="--base-url",
        shown="none: URLs are built from the request's Host",
    )
    max_body_bytes: int = _setting(
        1024 * 1024, INT, "request body limit, bytes", check=positive, flag="--max-body-bytes"
    )
    # a batch or transaction Bundle (POST /): its entries each held to max_body_bytes, the
    # whole to its own limit, as 1,000 entries of a few KiB would not fit in one body's
    max_bundle_entries: int = _setting(
        1000, INT, "entries a batch or transaction Bundle may have", check=positive
    )
    max_bundle_bytes: int = _setting(
        16 * 1024 * 1024, INT, "batch or transaction Bundle body limit, bytes", check=positive
    )
    token_ttl: int = _setting(
        3600, INT, "access token lifetime, s", check=positive, flag="--token-ttl"
    )
    # an authorization code waits this long for its exchange (http.sign_in): a browser
    # redirect and one token request take a second or two
    auth_code_ttl: int = _setting(
        60, INT, "a sign-in's authorization code must be exchanged within, s", check=positive
    )
    # a person's session (http.sign_in): each refresh token lives this long from its issue,
    # and each use gives a new one, so a session lasts while its app refreshes in time
    refresh_token_ttl: int = _setting(
        8 * 3600, INT, "a person's refresh token lifetime, s (renewed on each use)", check=positive
    )
    audit_flush_seconds: float = _setting(
        0.5, FLOAT, "audit records wait in memory at most this long, s", check=positive
    )
    # a revocation takes effect on every server within this time
    client_cache_seconds: float = _setting(
        1.0,
        FLOAT,
        "how long a server may answer from its copy of a client's or user's row, s",
        check=not_negative,
    )
    # token requests (auth.throttle): per window, failures allowed for one client id from one
    # peer address, and secret checks one peer address may start (counted until they succeed)
    token_failures_per_client: int = _setting(
        5, INT, "token failures per client id and peer address per window", check=positive
    )
    token_failures_per_address: int = _setting(
        30, INT, "secret checks one peer address may start per window", check=positive
    )
    token_failure_window: float = _setting(
        60.0, FLOAT, "the token throttle's window, s", check=positive
    )
    # a password is no 256-bit secret: guesses at one person's from any number of addresses
    # are bounded too (a budget that refills over the hour: a slowdown, not a lockout)
    sign_in_failures_per_user: int = _setting(
        30, INT, "failed sign-ins per username per hour, from any address", check=positive
    )
    token_hash_threads: int = _setting(
        _CPUS,
        INT,
        "secret checks (scrypt) run at once per process",
        check=positive,
        shown="the CPU count",
    )
    token_hash_queue: int = _setting(
        16, INT, "secret checks that may wait for a thread", check=not_negative
    )
    # limits checked before routing (http.limits), and while a head arrives (http.timeouts)
    max_header_bytes: int = _setting(16 * 1024, INT, "request header limit, bytes", check=positive)
    max_headers: int = _setting(100, INT, "request header count limit", check=positive)
    max_url_bytes: int = _setting(8 * 1024, INT, "URL length limit, bytes", check=positive)
    max_json_depth: int = _setting(32, INT, "JSON nesting limit, levels", check=positive)
    # what a client may take over what it owes (http.timeouts)
    header_timeout: float = _setting(
        10.0,
        FLOAT,
        "complete request headers due, s from the connection or the previous response",
        check=positive,
    )
    body_timeout: float = _setting(
        30.0, FLOAT, "a whole request body due, s from the end of its headers", check=positive
    )
    keepalive_timeout: int = _setting(
        5, INT, "an idle connection between requests is closed after, s", check=positive
    )
    search_timeout: float = _setting(
        10.0, FLOAT, "a search's statements are stopped (503) after, s", check=positive
    )
    # without a base URL the Host decides the URLs the server writes (http.urls)
    allowed_hosts: tuple[str, ...] = _setting(
        (),
        HOSTS,
        "Host header names accepted, comma-separated ('*': any)",
        check=host_names,
        flag="--allowed-hosts",
        shown="with a base URL any, else the loopback names and --host",
    )
    # browser apps on these origins may call the API (http.cors); none by default, as a
    # server that no browser app uses has no reason to let one in
    cors_origins: tuple[str, ...] = _setting(
        (),
        HOSTS,
        "origins of the browser apps allowed to call the API (CORS), comma-separated ('*': any)",
        check=origins,
        flag="--cors-origins",
        shown="none: CORS is off",
    )
    # subscriptions (service.delivery): where notifications may go, and how hard to try
    subscription_endpoints: tuple[str, ...] = _setting(
        (),
        HOSTS,
        "URL prefixes a subscription's rest-hook endpoint may start with, comma-separated",
        check=url_prefixes,
        shown="none: https:// URLs whose host resolves to public addresses only",
    )
    subscription_retry_seconds: int = _setting(
        3600,
        INT,
        "failed notifications are retried (backing off) for, s; then the subscription is error",
        check=positive,
    )
    subscription_retention: int = _setting(
        7 * 86400, INT, "events are kept for $events for, s", check=positive
    )
    subscription_timeout: float = _setting(
        10.0, FLOAT, "a receiver must answer a notification within, s", check=positive
    )
    subscription_concurrency: int = _setting(
        16, INT, "notifications one process sends at once", check=positive
    )
    subscription_poll_seconds: float = _setting(
        1.0, FLOAT, "delivery looks for due work at least this often, s", check=positive
    )
    metrics: str = _setting(
        METRICS_OFF,
        TEXT,
        "GET /metrics (Prometheus): off, open (no token), or the bearer token a scraper sends",
        check=metrics_mode,
        shown="off",
    )
    log_format: str = _setting(
        "text",
        TEXT,
        "text, or json: JSON lines with the request id, interaction, status and duration",
        check=log_format,
        flag="--log-format",
    )
    # a Literal: ruff cannot tell it is immutable, as it can for the str fields
    profile: Profile = _setting(  # noqa: RUF009
        DEFAULT_PROFILE,
        PROFILE,
        "canvas: Canvas's documented behaviour; fhir: FHIR REST conventions (README)",
        check=known_profile,
        flag="--profile",
    )

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            problem = setting.problem(getattr(self, setting.name))
            if problem is not None:
                raise BadSetting(problem)

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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every setting from its environment variable (os.environ by default)."""
        env = os.environ if environ is None else environ
        return cls(**{setting.name: setting.read(env) for setting in SETTINGS})

    def to_env(self) -> dict[str, str]:
        """The environment `from_env` reads these settings back from (how worker processes
        get them); a setting whose text is empty is left out, as from_env reads it so."""
        env: dict[str, str] = {}
        for setting in SETTINGS:
            text = setting.kind.text(getattr(self, setting.name))
            if text:
                env[setting.env] = text
        return env


def _declarations() -> Iterator[Setting]:
    for field in dataclasses.fields(Settings):
        declared = field.metadata[_DECLARED]
        yield Setting(field.name, field.default, declared)


SETTINGS: tuple[Setting, ...] = tuple(_declarations())


def env_value(name: str) -> Any:
    """One setting from the environment, for a command that needs no other (a bad value of
    another setting is then no concern of it)."""
    return next(s for s in SETTINGS if s.name == name).read(os.environ)


def readme_table() -> str:
    """The README's table of settings, as Markdown."""
    rows = [
        "| Environment variable | `serve` flag | Default | What it sets |",
        "| --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        flag = f"`{s.declared.flag}`" if s.declared.flag else ""
        default = s.declared.shown or f"`{s.shown_default}`"
        rows.append(f"| `{s.env}` | {flag} | {default} | {s.declared.help} |")
    return "\n".join(rows) + "\n"


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


if __name__ == "__main__":  # python -m caretask.config: the table to paste into the README
    print(readme_table(), end="")
