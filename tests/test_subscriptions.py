"""SPEC 11, issue 16: R4 topic-based Subscriptions (Subscriptions Backport IG) on the topic
"a Task was created, changed or deleted".

Specification, against a real server of each engine and real receivers on loopback:
- /Subscription: create (201, Location, ETag, the signing secret shown once), read (the
  secret never), update, delete, search by url and status; a topic, channel, payload or
  endpoint the server does not support is a 422 at creation, a filter GET /Task would
  refuse a 400; creating one needs a write scope on Subscription.
- rest-hook: a handshake makes it active; each task write its filter matched before or
  after is an event-notification, numbered without gaps, with its focus and the entry of
  the write; bodies signed with HMAC-SHA256; channel headers sent; empty, id-only and
  full-resource payloads; retries after the receiver was down; `error` after the retry
  time, and heartbeats carry it; $status and $events.
- websocket: $get-ws-binding-token, bind-with-token, handshake, then events.
Each notification Bundle passes the independent validator.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from tests.support.databases import engine_database
from tests.support.receiver import (
    Received,
    Receiver,
    event_numbers,
    notification_type,
    signature_valid,
)
from tests.support.seed import seed_task
from tests.support.server import Server
from tests.support.subscriptions import (
    LOOPBACK,
    SCOPE,
    SECRET_URL,
    TOPIC,
    events_since_start,
    focus_of,
    secret_of,
    subscription_body,
)
from tests.support.validator import validate_all

FHIR = {"Content-Type": "application/fhir+json"}
RETRY_SECONDS = 4


@pytest.fixture(scope="module")
def hooks_server(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"subscriptions-{engine}")
    env = {**LOOPBACK, "CARETASK_SUBSCRIPTION_RETRY_SECONDS": str(RETRY_SECONDS)}
    with engine_database(engine, workdir) as url, Server(url, workdir, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(hooks_server: Server) -> Iterator[httpx.Client]:
    with hooks_server.client(hooks_server.token(SCOPE)) as api:
        yield api


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


def subscribe(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/Subscription", json=body, headers=FHIR)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def active(client: httpx.Client, receiver: Receiver, body: dict[str, Any]) -> dict[str, Any]:
    """A subscription whose handshake the receiver has taken."""
    created = subscribe(client, body)
    receiver.wait_for(lambda got: any(notification_type(r) == "handshake" for r in got))
    return created


def new_task(client: httpx.Client, **changes: Any) -> tuple[str, int]:
    response = client.post("/Task", json=seed_task(**changes), headers=FHIR)
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1], 1


def update(client: httpx.Client, task_id: str, **changes: Any) -> int:
    current = client.get(f"/Task/{task_id}").json()
    current.update(changes)
    response = client.put(f"/Task/{task_id}", json=current, headers=FHIR)
    assert response.status_code == 200, response.text
    return int(response.headers["etag"].split('"')[1])


def events(receiver: Receiver, count: int, timeout: float = 15) -> list[Received]:
    """The event notifications, once `count` distinct event numbers have arrived."""

    def numbers(got: list[Received]) -> set[int]:
        return {
            n for r in got if notification_type(r) == "event-notification" for n in event_numbers(r)
        }

    got = receiver.wait_for(lambda got: len(numbers(got)) >= count, timeout)
    return [r for r in got if notification_type(r) == "event-notification"]


def status_parameter(bundle: dict[str, Any], name: str) -> Any:
    parameters = bundle["entry"][0]["resource"]["parameter"]
    found = next(p for p in parameters if p["name"] == name)
    return next(v for k, v in found.items() if k.startswith("value"))


# --- the resource -------------------------------------------------------------------------


def test_a_create_answers_201_with_location_etag_and_the_signing_secret_once(
    client: httpx.Client, receiver: Receiver
) -> None:
    response = client.post("/Subscription", json=subscription_body(receiver.url), headers=FHIR)
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"].endswith(f"/Subscription/{created['id']}")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert created["status"] == "requested"
    assert len(secret_of(created)) >= 32
    read = client.get(f"/Subscription/{created['id']}")
    assert read.status_code == 200
    assert SECRET_URL not in read.text
    assert read.json()["criteria"] == TOPIC


def test_a_client_may_bring_its_own_signing_secret(
    client: httpx.Client, receiver: Receiver
) -> None:
    body = subscription_body(receiver.url)
    body["channel"]["extension"] = [{"url": SECRET_URL, "valueString": "s" * 40}]
    created = active(client, receiver, body)
    assert secret_of(created) == "s" * 40
    assert signature_valid(receiver.received[0], "s" * 40)


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        ({"criteria": "http://example.org/topic/other"}, "Subscription.criteria"),
        (
            {"channel": {"type": "email", "endpoint": "mailto:a@example.org"}},
            "Subscription.channel.type",
        ),
        (
            {
                "channel": {
                    "type": "rest-hook",
                    "endpoint": "http://127.0.0.1:1/h",
                    "payload": "text/xml",
                }
            },
            "Subscription.channel.payload",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": "http://10.0.0.1/hook"}},
            "Subscription.channel.endpoint",
        ),
        (
            {
                "channel": {
                    "type": "rest-hook",
                    "endpoint": "http://127.0.0.1:1/h",
                    "header": ["Host: x"],
                }
            },
            "Subscription.channel.header[0]",
        ),
    ],
    ids=["topic", "channel", "payload", "endpoint", "header"],
)
def test_what_the_server_does_not_support_is_refused_at_creation_with_422(
    client: httpx.Client, change: dict[str, Any], expression: str
) -> None:
    body = {**subscription_body("http://127.0.0.1:1/hook"), **change}
    response = client.post("/Subscription", json=body, headers=FHIR)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [expression]


def test_an_unsupported_payload_content_is_a_422(client: httpx.Client) -> None:
    body = subscription_body("http://127.0.0.1:1/hook", content="everything")
    response = client.post("/Subscription", json=body, headers=FHIR)
    assert response.status_code == 422


@pytest.mark.parametrize("search", ["colour=red", "status=not-a-status", "_sort=due", "_count=5"])
def test_a_filter_that_is_no_task_search_is_a_400(client: httpx.Client, search: str) -> None:
    response = client.post(
        "/Subscription", json=subscription_body("http://127.0.0.1:1/h", search), headers=FHIR
    )
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_body_that_is_no_subscription_is_a_400(client: httpx.Client) -> None:
    body = subscription_body("http://127.0.0.1:1/h")
    del body["reason"]
    response = client.post("/Subscription", json=body, headers=FHIR)
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "required"


def test_creating_one_needs_a_write_scope_on_subscription(hooks_server: Server) -> None:
    body = subscription_body("http://127.0.0.1:1/hook")
    with hooks_server.client(hooks_server.token("system/Task.*")) as task_only:
        refused = task_only.post("/Subscription", json=body, headers=FHIR)
    assert refused.status_code == 403
    assert "system/Subscription.write" in refused.text
    with hooks_server.client(hooks_server.token("system/Subscription.c")) as v2:
        assert v2.post("/Subscription", json=body, headers=FHIR).status_code == 201


def test_search_by_url_and_status(client: httpx.Client, receiver: Receiver) -> None:
    created = subscribe(client, subscription_body(receiver.url, status="off"))
    found = client.get("/Subscription", params={"url": receiver.url, "status": "off"})
    assert found.status_code == 200
    bundle = found.json()
    assert bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [created["id"]]
    assert client.get("/Subscription", params={"colour": "red"}).status_code == 400


def test_update_with_status_off_stops_notifications_and_delete_removes_it(
    client: httpx.Client, receiver: Receiver
) -> None:
    created = active(client, receiver, subscription_body(receiver.url))
    body = {**client.get(f"/Subscription/{created['id']}").json(), "status": "off"}
    response = client.put(
        f"/Subscription/{created['id']}", json=body, headers={**FHIR, "If-Match": 'W/"1"'}
    )
    assert response.status_code == 200
    assert response.json()["status"] == "off"
    assert response.headers["etag"] == 'W/"2"'
    new_task(client)
    time.sleep(1.0)
    assert all(notification_type(r) == "handshake" for r in receiver.received)
    assert client.delete(f"/Subscription/{created['id']}").status_code == 204
    assert client.get(f"/Subscription/{created['id']}").status_code == 404


# --- rest-hook delivery -------------------------------------------------------------------


def test_the_handshake_makes_it_active_and_is_signed_with_its_secret(
    client: httpx.Client, receiver: Receiver
) -> None:
    created = active(client, receiver, subscription_body(receiver.url, headers=("X-Hook: 7",)))
    handshake = receiver.received[0]
    assert handshake.headers["content-type"] == "application/fhir+json"
    assert handshake.headers["x-hook"] == "7"
    assert signature_valid(handshake, secret_of(created))
    assert not signature_valid(handshake, "another secret of some length")
    bundle = handshake.json()
    assert bundle["type"] == "history"
    assert status_parameter(bundle, "status") == "requested"
    assert status_parameter(bundle, "events-since-subscription-start") == "0"
    deadline = time.monotonic() + 5
    while client.get(f"/Subscription/{created['id']}").json()["status"] != "active":
        assert time.monotonic() < deadline, "not active after its handshake"
        time.sleep(0.1)


def test_a_filter_notifies_a_match_on_create_on_leaving_and_on_delete(
    client: httpx.Client, receiver: Receiver
) -> None:
    patient = f"Patient/subs-{time.monotonic_ns()}"
    search = f"patient={patient}&status=requested"
    created = active(client, receiver, subscription_body(receiver.url, search))
    matching, _ = new_task(client, **{"for": {"reference": patient}, "status": "requested"})
    new_task(client, **{"for": {"reference": patient}, "status": "completed"})  # never matched
    left = update(client, matching, status="completed")  # leaves the filter
    update(client, matching, description="changed after it left")  # matched neither version
    other, _ = new_task(client, **{"for": {"reference": patient}, "status": "requested"})
    deleted = client.delete(f"/Task/{other}")
    assert deleted.status_code == 204
    got = events(receiver, 4)
    numbers = [n for r in got for n in event_numbers(r)]
    assert numbers == [1, 2, 3, 4]
    focus = [f for r in got for f in focus_of(r.json())]
    assert focus == [
        f"Task/{matching}/_history/1",
        f"Task/{matching}/_history/{left}",
        f"Task/{other}/_history/1",
        f"Task/{other}/_history/2",
    ]
    methods = [e["request"]["method"] for r in got for e in r.json()["entry"][1:]]
    assert methods == ["POST", "PUT", "POST", "DELETE"]
    assert all(signature_valid(r, secret_of(created)) for r in got)
    status = client.get(f"/Subscription/{created['id']}/$status").json()
    assert status_parameter(status, "events-since-subscription-start") == "4"


def test_every_notification_bundle_passes_the_independent_validator(
    client: httpx.Client, receiver: Receiver
) -> None:
    patient = f"Patient/valid-{time.monotonic_ns()}"
    created = active(
        client, receiver, subscription_body(receiver.url, f"patient={patient}", "full-resource")
    )
    task_id, _ = new_task(client, **{"for": {"reference": patient}})
    got = events(receiver, 1)
    replay = client.get(f"/Subscription/{created['id']}/$events").json()
    status = client.get(f"/Subscription/{created['id']}/$status").json()
    bundles = [receiver.received[0].json(), got[0].json(), replay, status]
    assert got[0].json()["entry"][1]["resource"]["id"] == task_id
    assert validate_all(bundles) == [[], [], [], []]


def test_an_empty_payload_names_no_task(client: httpx.Client, receiver: Receiver) -> None:
    patient = f"Patient/empty-{time.monotonic_ns()}"
    active(client, receiver, subscription_body(receiver.url, f"patient={patient}", "empty"))
    new_task(client, **{"for": {"reference": patient}})
    bundle = events(receiver, 1)[0].json()
    assert len(bundle["entry"]) == 1
    assert focus_of(bundle) == []
    assert patient not in orjson.dumps(bundle).decode()


def test_events_written_while_the_receiver_was_down_arrive_in_order_after_it_is_back(
    client: httpx.Client, receiver: Receiver
) -> None:
    patient = f"Patient/down-{time.monotonic_ns()}"
    active(client, receiver, subscription_body(receiver.url, f"patient={patient}"))
    receiver.down()
    for _ in range(5):
        new_task(client, **{"for": {"reference": patient}})
    time.sleep(1.5)
    receiver.up()
    got = events(receiver, 5)
    numbers = [n for r in got for n in event_numbers(r)]
    assert numbers == [1, 2, 3, 4, 5]


def test_a_receiver_failing_past_the_retry_time_puts_it_in_error_and_heartbeats_say_so(
    client: httpx.Client, receiver: Receiver
) -> None:
    patient = f"Patient/error-{time.monotonic_ns()}"
    created = active(
        client, receiver, subscription_body(receiver.url, f"patient={patient}", heartbeat=1)
    )
    receiver.status = 500
    new_task(client, **{"for": {"reference": patient}})
    deadline = time.monotonic() + RETRY_SECONDS + 20
    while (read := client.get(f"/Subscription/{created['id']}").json())["status"] != "error":
        assert time.monotonic() < deadline, "not in error after the retry time"
        time.sleep(0.2)
    assert read["error"] == "the endpoint answered 500"
    status = client.get(f"/Subscription/{created['id']}/$status").json()
    assert status_parameter(status, "status") == "error"
    receiver.status = 200
    beat = receiver.wait_for(
        lambda got: any(notification_type(r) == "heartbeat" for r in got), timeout=15
    )
    heartbeat = next(r for r in beat if notification_type(r) == "heartbeat").json()
    assert status_parameter(heartbeat, "status") == "error"
    assert status_parameter(heartbeat, "error")["text"] == "the endpoint answered 500"
    assert validate_all([heartbeat]) == [[]]


def test_events_replays_kept_events_by_number(client: httpx.Client, receiver: Receiver) -> None:
    patient = f"Patient/replay-{time.monotonic_ns()}"
    created = active(client, receiver, subscription_body(receiver.url, f"patient={patient}"))
    ids = [new_task(client, **{"for": {"reference": patient}})[0] for _ in range(4)]
    events(receiver, 4)
    response = client.get(
        f"/Subscription/{created['id']}/$events",
        params={"eventsSinceNumber": "2", "eventsUntilNumber": "3"},
    )
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["type"] == "history"
    assert status_parameter(bundle, "type") == "query-event"
    assert focus_of(bundle) == [f"Task/{ids[1]}/_history/1", f"Task/{ids[2]}/_history/1"]
    unknown = client.get(f"/Subscription/{created['id']}/$events", params={"since": "1"})
    assert unknown.status_code == 400


# --- websocket ----------------------------------------------------------------------------


def test_a_websocket_bound_with_a_token_gets_a_handshake_then_the_events(
    client: httpx.Client,
) -> None:
    patient = f"Patient/socket-{time.monotonic_ns()}"
    created = subscribe(client, subscription_body(None, f"patient={patient}", channel="websocket"))
    assert created["status"] == "active"
    response = client.post(f"/Subscription/{created['id']}/$get-ws-binding-token")
    assert response.status_code == 200
    parameters = {p["name"]: p for p in response.json()["parameter"]}
    token = parameters["token"]["valueString"]
    url = parameters["websocket-url"]["valueUrl"]
    assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws")
    with connect(url, open_timeout=5) as socket:
        socket.send("bind-with-token: not-a-token")
        assert "invalid" in str(socket.recv(timeout=5))
        socket.send(f"bind-with-token: {token}")
        handshake = orjson.loads(socket.recv(timeout=5))
        assert status_parameter(handshake, "type") == "handshake"
        task_id, _ = new_task(client, **{"for": {"reference": patient}})
        notification = orjson.loads(socket.recv(timeout=5))
    assert status_parameter(notification, "type") == "event-notification"
    assert focus_of(notification) == [f"Task/{task_id}/_history/1"]
    assert validate_all([handshake, notification]) == [[], []]


def test_a_binding_token_is_only_for_websocket_subscriptions(
    client: httpx.Client, receiver: Receiver
) -> None:
    created = subscribe(client, subscription_body(receiver.url))
    response = client.post(f"/Subscription/{created['id']}/$get-ws-binding-token")
    assert response.status_code == 400


@pytest.mark.parametrize("number", ["²", "\u0661", "-1", "1.0", "9" * 30])
def test_an_event_number_that_is_no_ascii_whole_number_is_a_400(
    client: httpx.Client, receiver: Receiver, number: str
) -> None:
    created = subscribe(client, subscription_body(receiver.url, status="off"))
    response = client.get(
        f"/Subscription/{created['id']}/$events", params={"eventsSinceNumber": number}
    )
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_claims_and_releases_are_notified_as_updates_entering_and_leaving_a_filter(
    client: httpx.Client, receiver: Receiver
) -> None:
    patient = f"Patient/subs-{time.monotonic_ns()}"
    active(
        client, receiver, subscription_body(receiver.url, f"patient={patient}&owner:missing=true")
    )
    task, _ = new_task(client, **{"for": {"reference": patient}, "owner": None})
    claim = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "criteria", "valueString": f"patient={patient}"},
            {"name": "owner", "valueReference": {"reference": "Practitioner/claimer"}},
        ],
    }
    assert client.post("/Task/$claim-next", json=claim, headers=FHIR).status_code == 200
    assert client.post(f"/Task/{task}/$release", headers=FHIR).status_code == 200
    got = events(receiver, 3)
    focus = [f for r in got for f in focus_of(r.json())]
    # created unowned (matches), claimed (leaves the filter), released (enters it again)
    assert focus == [
        f"Task/{task}/_history/1",
        f"Task/{task}/_history/2",
        f"Task/{task}/_history/3",
    ]
    methods = [e["request"]["method"] for r in got for e in r.json()["entry"][1:]]
    assert methods == ["POST", "PUT", "PUT"]


def test_a_subscription_is_turned_off_when_its_end_has_passed(
    client: httpx.Client, receiver: Receiver
) -> None:
    patient = f"Patient/subs-{time.monotonic_ns()}"
    body = subscription_body(receiver.url, f"patient={patient}")
    body["end"] = (datetime.now(UTC) + timedelta(seconds=3)).isoformat(timespec="milliseconds")
    created = active(client, receiver, body)
    new_task(client, **{"for": {"reference": patient}})
    assert len(events(receiver, 1)) == 1  # before its end: notified
    deadline = time.monotonic() + 15
    while client.get(f"/Subscription/{created['id']}").json()["status"] != "off":
        assert time.monotonic() < deadline, "still on after its end"
        time.sleep(0.2)
    new_task(client, **{"for": {"reference": patient}})  # after its end: no event
    time.sleep(1)
    assert events_since_start(client, created["id"]) == 1
