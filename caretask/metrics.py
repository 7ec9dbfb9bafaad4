"""The server's metrics, in the Prometheus text format at GET /metrics (CARETASK_METRICS;
http.metrics serves them), with prometheus-client.

Each layer records its own: the HTTP edge requests and their latency (by interaction, the
audit trail's name), SQLite's group commit its group sizes, delivery its notifications and
their lag, the tasks service its claims; a sampler in each worker sets the gauges (pool
use, the audit queue, the subscription backlog). `caretask serve --workers N` gives the
workers one directory for prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set before they start): a scrape answered by any worker sums them all.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "caretask_requests",
    "HTTP requests answered, by interaction and status",
    ["interaction", "status"],
)
LATENCY = Histogram(
    "caretask_request_duration_seconds",
    "time from a request's arrival to the end of its answer, by interaction",
    ["interaction"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
POOL_SIZE = Gauge(
    "caretask_db_connections",
    "database connections a worker may use at once (PostgreSQL: its pool; SQLite: readers)",
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "caretask_db_connections_in_use", "database connections in use", multiprocess_mode="livesum"
)
POOL_WAITING = Gauge(
    "caretask_db_waiting",
    "requests waiting for a pooled connection (PostgreSQL), or writes queued for the group "
    "commit (SQLite)",
    multiprocess_mode="livesum",
)
GROUP_COMMIT = Histogram(
    "caretask_group_commit_writes",
    "writes committed in one SQLite transaction by the group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
AUDIT_QUEUE = Gauge(
    "caretask_audit_queue_records",
    "audit records waiting to be stored",
    multiprocess_mode="livesum",
)
AUDIT_DROPPED = Counter(
    "caretask_audit_dropped_records", "audit records dropped because the queue was full"
)
SUBSCRIPTION_BACKLOG = Gauge(
    "caretask_subscription_backlog_events",
    "events recorded and not yet delivered, over every rest-hook subscription",
    multiprocess_mode="max",
)
NOTIFICATIONS = Counter(
    "caretask_subscription_notifications",
    "rest-hook notifications sent, by kind (handshake, heartbeat, event-notification) and "
    "outcome (delivered, failed)",
    ["kind", "outcome"],
)
DELIVERY_LAG = Histogram(
    "caretask_subscription_delivery_lag_seconds",
    "time from an event's commit to the receiver's 2xx",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
CLAIMS = Counter(
    "caretask_claims",
    "claim operations, by operation (claim, claim-next, release) and outcome (changed, "
    "unchanged, refused)",
    ["operation", "outcome"],
)


def exposition() -> bytes:
    """Every metric in the text format: this process's, or every worker's in
    multiprocess mode."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def worker_exited(pid: int) -> None:
    """Drop a stopped worker's live gauges (multiprocess mode)."""
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
