"""Issue 18 (SPEC 13): GET /metrics in the Prometheus text format, parsed here with
prometheus-client's own parser. CARETASK_METRICS: `off` (the default: a 404), `open`, or
the bearer token a scraper must send. Requests by interaction and status, their latency,
database connections, SQLite's group-commit sizes, the audit queue, the subscription
backlog and deliveries, and claims; with `--workers 2` a scrape answered by either worker
counts both workers' requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.databases import POSTGRES_URL, database_url, postgres_database
from tests.support.log_scan import remember
from tests.support.receiver import Receiver, notification_type
from tests.support.seed import SEED_CREATE
from tests.support.server import Server, run_cli
from tests.support.subscriptions import LOOPBACK, SCOPE, subscription_body

TOKEN = "scraper-token-0123456789abcdef"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parsed(text: str) -> Samples:
    """Every sample: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(srv: Server, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{srv.url}/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parsed(response.text)


def settled(srv: Server, check: Callable[[Samples], None]) -> Samples:
    """A scrape that passes `check`, within 10 s: a request is counted after its answer
    has gone (the client may scrape first), a notification after the receiver's 2xx."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(srv)
        try:
            check(samples)
            return samples
        except (AssertionError, KeyError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("metrics-open")
    env = {"CARETASK_METRICS": "open", **LOOPBACK}
    with Server(database_url("sqlite", workdir), workdir, env=env) as srv:
        yield srv


def test_metrics_are_off_by_default(server: Server) -> None:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_requests_are_counted_by_interaction_and_status(open_server: Server) -> None:
    before = scrape(open_server)
    with open_server.client(open_server.token()) as api:
        created = api.post("/Task", json=SEED_CREATE)
        assert created.status_code == 201
        task = created.headers["location"].rsplit("/", 1)[1]
        assert api.get(f"/Task/{task}").status_code == 200
        assert api.get("/Task/nosuchtask").status_code == 404

    def grew(after: Samples, interaction: str, status: str) -> float:
        key = ("caretask_requests_total", (("interaction", interaction), ("status", status)))
        return after[key] - before.get(key, 0.0)

    def counted(after: Samples) -> None:
        assert grew(after, "create", "201") == 1
        assert grew(after, "read", "200") == 1
        assert grew(after, "read", "404") == 1

    settled(open_server, counted)


def test_latency_is_a_histogram_by_interaction(open_server: Server) -> None:
    with open_server.client(open_server.token()) as api:
        api.get("/Task", params={"status": "requested"})

    def observed(samples: Samples) -> None:
        name = "caretask_request_duration_seconds"
        count = value(samples, f"{name}_count", interaction="search-type")
        assert count >= 1
        assert value(samples, f"{name}_bucket", interaction="search-type", le="+Inf") == count

    settled(open_server, observed)


def test_database_connections_audit_queue_and_backlog_are_gauges(open_server: Server) -> None:
    samples = scrape(open_server)
    assert value(samples, "caretask_db_connections") == 4  # SQLite's reader threads
    assert value(samples, "caretask_db_connections_in_use") >= 0
    assert value(samples, "caretask_db_waiting") >= 0
    assert value(samples, "caretask_audit_queue_records") >= 0
    assert value(samples, "caretask_subscription_backlog_events") == 0


def test_sqlite_group_commit_sizes_are_a_histogram(open_server: Server) -> None:
    with open_server.client(open_server.token()) as api:
        assert api.post("/Task", json=SEED_CREATE).status_code == 201
    samples = scrape(open_server)
    assert value(samples, "caretask_group_commit_writes_count") >= 1
    assert value(samples, "caretask_group_commit_writes_sum") >= 1


def test_claims_are_counted_by_operation_and_outcome(open_server: Server) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "criteria", "valueString": "patient=Patient/nobody-metrics"},
            {"name": "owner", "valueReference": {"reference": "Practitioner/p"}},
        ],
    }
    with open_server.client(open_server.token()) as api:
        assert api.post("/Task/$claim-next", json=body).status_code == 404
    samples = scrape(open_server)
    assert value(samples, "caretask_claims_total", operation="claim-next", outcome="none-left") >= 1


def test_a_metrics_token_is_required_when_one_is_set(make_server) -> None:  # type: ignore[no-untyped-def]
    remember(TOKEN)
    srv: Server = make_server(env={"CARETASK_METRICS": TOKEN})
    refused = httpx.get(f"{srv.url}/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="caretask-metrics"'
    wrong = httpx.get(f"{srv.url}/metrics", headers={"Authorization": "Bearer " + "x" * 30})
    assert wrong.status_code == 401
    assert value(scrape(srv, TOKEN), "caretask_db_connections") == 4


def test_a_short_metrics_token_is_refused_at_start_without_repeating_it(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "1", env={"CARETASK_METRICS": "short-secret"}, check=False)
    assert result.returncode == 2
    assert "CARETASK_METRICS must be off, open, or a bearer token of at least 16" in result.stderr
    assert "short-secret" not in result.stderr


def test_a_scrape_of_either_worker_counts_every_workers_requests(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: Server = make_server("--workers", "2", env={"CARETASK_METRICS": "open"})

    def served(samples: Samples) -> float:
        return value(samples, "caretask_requests_total", interaction="capabilities", status="200")

    before, sent = served(scrape(srv)), 40
    for _ in range(sent):  # a new connection each: the workers share them out
        assert httpx.get(f"{srv.url}/metadata").status_code == 200

    def all_counted(samples: Samples) -> None:
        assert served(samples) - before == sent

    settled(srv, all_counted)
    # every scrape, whichever worker answers it, sums both workers' counts
    assert {served(scrape(srv)) - before for _ in range(6)} == {sent}


@pytest.mark.skipif(not POSTGRES_URL, reason="CARETASK_TEST_POSTGRES_URL is not set")
def test_postgresql_pool_size_and_use_are_gauges(make_server) -> None:  # type: ignore[no-untyped-def]
    with postgres_database() as database:
        env = {"CARETASK_METRICS": "open", "CARETASK_DB_POOL_SIZE": "3"}
        srv: Server = make_server(database=database, env=env)
        samples = scrape(srv)
        srv.stop()
    assert value(samples, "caretask_db_connections") == 3
    assert 0 <= value(samples, "caretask_db_connections_in_use") <= 3


def test_notifications_and_their_lag_are_counted(open_server: Server) -> None:
    with Receiver() as receiver, open_server.client(open_server.token(SCOPE)) as api:
        body = subscription_body(receiver.url, "patient=Patient/metrics-lag")
        assert api.post("/Subscription", json=body).status_code == 201
        task = {**SEED_CREATE, "for": {"reference": "Patient/metrics-lag"}}
        assert api.post("/Task", json=task).status_code == 201
        receiver.wait_for(
            lambda got: any(notification_type(r) == "event-notification" for r in got)
        )

    def counted(samples: Samples) -> None:
        name = "caretask_subscription_notifications_total"
        kinds = {
            kind: value(samples, name, kind=kind, outcome="delivered")
            for kind in ("handshake", "event-notification")
        }
        assert kinds == {"handshake": 1, "event-notification": 1}
        assert value(samples, "caretask_subscription_delivery_lag_seconds_count") == 1

    settled(open_server, counted)
