"""One `caretask serve` per profile for the whole run (SQLite: the clients exercise the HTTP
API, which the engine tests cover on both engines), each with an OAuth client of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.interop.scenario import PROFILES, Interop
from tests.support.databases import database_url
from tests.support.log_scan import remember
from tests.support.server import Server


@pytest.fixture(scope="session")
def interop_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], Interop]]:
    """A profile's server, started the first time a test asks for it, stopped at the end."""
    started: dict[str, Interop] = {}
    # a server that would not start fails every later test at once, with its reason,
    # instead of each test waiting for another start to fail
    refused: dict[str, str] = {}

    def get(profile: str) -> Interop:
        if profile in refused:
            pytest.fail(refused[profile])
        if profile not in started:
            workdir = tmp_path_factory.mktemp(f"interop-{profile}")
            server = Server(database_url("sqlite", workdir), workdir, extra=("--profile", profile))
            try:
                server.start()
                creds = server.create_client(name=f"interop-{profile}")
            except Exception as exc:
                server.stop()
                refused[profile] = f"the {profile} profile's server did not start: {exc}"
                raise
            remember(creds["client_secret"])
            started[profile] = Interop(server, profile, creds["client_id"], creds["client_secret"])
        return started[profile]

    yield get
    for interop in started.values():
        interop.server.stop()


@pytest.fixture(params=PROFILES)
def any_profile(
    request: pytest.FixtureRequest, interop_servers: Callable[[str], Interop]
) -> Interop:
    """A server in each profile in turn: for what a client can do in both."""
    return interop_servers(request.param)


@pytest.fixture
def fhir_profile(interop_servers: Callable[[str], Interop]) -> Interop:
    """The fhir profile's server: for what a client can do only with FHIR's conventions."""
    return interop_servers("fhir")
