"""A person's token reaches only the Subscriptions that person created (SPEC 11, 12): the
task board's people may watch tasks, but another's Subscription (its endpoint, its
headers, which may carry the receiver's credentials, and its notifications) is not theirs
to read, change, delete, replay or bind to. Another's answers 404, as one that does not
exist. A client acting for itself (system scopes) reaches every one. Both engines."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.databases import engine_database
from tests.support.people import create_user, person_token
from tests.support.server import Server
from tests.support.subscriptions import LOOPBACK, SCOPE, subscription_body

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def owners_server(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"owners-{engine}")
    with engine_database(engine, workdir) as url, Server(url, workdir, env=LOOPBACK) as srv:
        yield srv


@pytest.fixture(scope="module")
def system(owners_server: Server) -> Iterator[httpx.Client]:
    with owners_server.client(owners_server.token(SCOPE)) as client:
        yield client


def person(server: Server) -> httpx.Client:
    user = create_user(server)
    return server.client(person_token(server, user["username"])["access_token"])


@pytest.fixture(scope="module")
def integration(system: httpx.Client) -> dict[str, Any]:
    """A system client's rest-hook Subscription whose header carries its receiver's key."""
    body = subscription_body(
        "http://127.0.0.1:9/hook", headers=("Authorization: Bearer receiver-key-0123456789",)
    )
    response = system.post("/Subscription", json=body, headers=FHIR)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_a_person_cannot_read_a_clients_subscription(
    owners_server: Server, integration: dict[str, Any]
) -> None:
    with person(owners_server) as alice:
        response = alice.get(f"/Subscription/{integration['id']}")
    assert response.status_code == 404
    assert "receiver-key" not in response.text


def test_a_person_cannot_change_or_delete_a_clients_subscription(
    owners_server: Server, system: httpx.Client, integration: dict[str, Any]
) -> None:
    sub = integration["id"]
    changed = {**subscription_body("http://127.0.0.1:10/elsewhere"), "id": sub}
    with person(owners_server) as alice:
        assert alice.put(f"/Subscription/{sub}", json=changed, headers=FHIR).status_code == 404
        assert alice.delete(f"/Subscription/{sub}").status_code == 404
    kept = system.get(f"/Subscription/{sub}")
    assert kept.status_code == 200
    assert kept.json()["channel"]["endpoint"] == "http://127.0.0.1:9/hook"


def test_a_person_cannot_replay_or_bind_to_a_clients_subscription(
    owners_server: Server, integration: dict[str, Any]
) -> None:
    sub = integration["id"]
    with person(owners_server) as alice:
        assert alice.get(f"/Subscription/{sub}/$events").status_code == 404
        assert alice.get(f"/Subscription/{sub}/$status").status_code == 404
        assert alice.get(f"/Subscription/{sub}/$get-ws-binding-token").status_code == 404


def test_a_persons_searches_and_status_list_only_their_own(
    owners_server: Server, system: httpx.Client, integration: dict[str, Any]
) -> None:
    with person(owners_server) as alice, person(owners_server) as bob:
        mine = alice.post("/Subscription", json=subscription_body(None, channel="websocket"))
        theirs = bob.post("/Subscription", json=subscription_body(None, channel="websocket"))
        assert (mine.status_code, theirs.status_code) == (201, 201)
        found = alice.get("/Subscription").json()
        statuses = alice.get("/Subscription/$status").json()
        own_read = alice.get(f"/Subscription/{mine.json()['id']}")
    assert [e["resource"]["id"] for e in found["entry"]] == [mine.json()["id"]]
    assert found["total"] == 1
    assert len(statuses["entry"]) == 1
    assert own_read.status_code == 200
    everyone = {e["resource"]["id"] for e in system.get("/Subscription?_count=100").json()["entry"]}
    assert {integration["id"], mine.json()["id"], theirs.json()["id"]} <= everyone
