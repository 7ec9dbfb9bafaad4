"""The hostile corpus's Subscription creates (tests/hostile/corpus.py), on a server with no
endpoint allowlist: each gets exactly its expected status with an OperationOutcome, and
none is stored. Specification: a subscription cannot make the server call an inward
address (loopback, private, link-local, the cloud metadata service), a non-https URL, or a
URL with credentials; a channel header cannot smuggle another; a body that is no
Subscription is a 400."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.corpus import SUBSCRIPTION_CORPUS, Entry
from tests.support.server import Server
from tests.support.subscriptions import SCOPE


@pytest.fixture(scope="module")
def subscriber(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.token(SCOPE)) as api:
        yield api


@pytest.mark.parametrize("entry", SUBSCRIPTION_CORPUS, ids=lambda e: e.name)
def test_a_hostile_subscription_gets_its_expected_answer(
    subscriber: httpx.Client, entry: Entry
) -> None:
    response = subscriber.request(
        entry.method, entry.path, content=entry.body, headers=entry.headers
    )
    assert response.status_code == entry.expected, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_status_request_naming_an_id_with_a_nul_finds_no_subscription(
    subscriber: httpx.Client,
) -> None:
    response = subscriber.post("/Subscription/$status", params={"id": "a\x00b"})
    assert response.status_code == 200, response.text
    assert response.json().get("entry", []) == []


def test_the_hostile_subscriptions_stored_nothing(subscriber: httpx.Client) -> None:
    found = subscriber.get("/Subscription")
    assert found.status_code == 200
    assert found.json()["total"] == 0
