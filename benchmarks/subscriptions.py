"""What subscriptions cost: create throughput with none, 100 idle and 100 notified
subscriptions, and notification latency from an event's commit to the receiver.

    python -m benchmarks.subscriptions [--engine sqlite|postgresql] [--clients 8]
                                       [--duration 5] [--runs 3] [--subscriptions 100]
                                       [--events 300] [--rate 20]

Needs `taskset` (util-linux); installs nothing. Starts a real `caretask serve` on a fresh
database pinned to CPU 0 (this process, its load and the webhook receiver run on CPU 1),
allowed to notify receivers on loopback and otherwise with its default delivery settings.
Load is --clients keep-alive connections sending POST /Task as fast as answered, each
scenario a warm-up and --runs measured runs of --duration seconds, the median quoted:

    ceiling        benchmarks.ceiling (201 to any POST, no auth, no storage) on the same
                   uvicorn stack, measured in the same run with the same requests
    none           creates, no subscription
    idle           creates with --subscriptions active subscriptions none of whose filters
                   match (owner=Practitioner/nobody-<i>): the cost of checking filters
    notified       creates with --subscriptions active subscriptions that all match
                   (status=requested), all notifying one receiver; the backlog left after
                   each run is drained before the next, and its drain time reported

Latency: --events creates written at --rate per second, with 1 and with --subscriptions
matching subscriptions; for every (subscription, event) the time from the event's
`timestamp` (the instant of the task version, written in the commit) to the notification's
arrival at the receiver; p50 and p99 over all, and the worst subscription's p50 (each
subscription's median is in the JSON, in the order they were created). Prints one table and writes
benchmarks/results/subscriptions-<engine>.json. PostgreSQL reads CARETASK_BENCH_POSTGRES_URL
(or CARETASK_TEST_POSTGRES_URL) and uses a fresh database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks.http import (
    LOAD_CPU,
    SERVER_CPU,
    _cpu_seconds,
    ceiling_server,
    database,
    require_tool,
)
from tests.support.receiver import Receiver
from tests.support.seed import SEED_CREATE
from tests.support.server import Server
from tests.support.subscriptions import SCOPE, subscription_body

HERE = Path(__file__).resolve().parent
FHIR_JSON = {"Content-Type": "application/fhir+json"}
# only what lets the server notify the receiver on loopback: delivery's defaults otherwise
SERVER_ENV = {"CARETASK_SUBSCRIPTION_ENDPOINTS": "http://127.0.0.1:"}
DRAIN_SECONDS = 300.0
# the receiver answers HTTP/1.0, a connection per notification: with a hundred subscriptions
# delivered at once, the listen backlog's default of 5 drops connections, which wait out a 1 s
# SYN retry; the benchmark is of the server, not of that
RECEIVER_BACKLOG = 1024


# --- load ----------------------------------------------------------------------------------


def create_request(port: int, token: str | None) -> bytes:
    """A POST /Task on a keep-alive connection, as bytes sent again and again."""
    body = orjson.dumps(SEED_CREATE)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /Task HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port: int, request: bytes, until: float) -> tuple[int, int]:
    """Requests sent one after another on one connection until `until`: (2xx, other)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    good = bad = 0
    try:
        while time.perf_counter() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif line.startswith(b"transfer-encoding:"):
                    raise RuntimeError("a chunked answer: not expected of a create")
            if length:
                await reader.readexactly(length)
            if 200 <= status < 300:
                good += 1
            else:
                bad += 1
    finally:
        writer.close()
    return good, bad


async def _load(port: int, request: bytes, clients: int, seconds: float) -> dict[str, float]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_connection(port, request, started + seconds) for _ in range(clients))
    )
    elapsed = time.perf_counter() - started
    good = sum(g for g, _ in results)
    return {"rate": good / elapsed, "requests": good, "errors": sum(b for _, b in results)}


def throughput(
    port: int, token: str | None, args: argparse.Namespace, name: str, between: Any = None
) -> dict[str, Any]:
    """Creates/s: the median of --runs runs after a warm-up; `between` runs after each."""
    request = create_request(port, token)
    asyncio.run(_load(port, request, args.clients, args.warmup))
    if between:
        between()
    runs = []
    for _ in range(args.runs):
        result = asyncio.run(_load(port, request, args.clients, args.duration))
        if between:
            result["drain_s"] = between()
        runs.append(result)
    summary: dict[str, Any] = {
        "rate": statistics.median(r["rate"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
    }
    if between:
        summary["drain_s"] = statistics.median(r["drain_s"] for r in runs)
    drained = f"  drained in {summary['drain_s']:.1f} s" if between else ""
    print(
        f"  {name:<10} {summary['rate']:>8,.0f} creates/s  errors {summary['errors']}{drained}",
        file=sys.stderr,
    )
    return summary


# --- subscriptions -------------------------------------------------------------------------


def _parameters(received: Any) -> list[dict[str, Any]]:
    return list(orjson.loads(received.body)["entry"][0]["resource"]["parameter"])


class Tracker:
    """Reads what the receiver got, once each: the highest event number per subscription,
    and (while `timing`) each event's latency from its timestamp to its arrival."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.highest: dict[str, int] = {}
        self.handshakes: set[str] = set()
        self.timing = False
        self.latencies: list[float] = []
        self.by_subscription: dict[str, list[float]] = {}

    def update(self) -> None:
        with self.receiver._arrived:  # nothing else needs what arrived: let it go once read
            new = list(self.receiver.received)
            del self.receiver.received[:]
        for received in new:
            parameters = _parameters(received)
            sub = next(
                p["valueReference"]["reference"].split("/", 1)[1]
                for p in parameters
                if p["name"] == "subscription"
            )
            kind = next(p["valueCode"] for p in parameters if p["name"] == "type")
            if kind == "handshake":
                self.handshakes.add(sub)
            for p in parameters:
                if p["name"] != "notification-event":
                    continue
                parts = {part["name"]: part for part in p["part"]}
                number = int(parts["event-number"]["valueString"])
                self.highest[sub] = max(self.highest.get(sub, 0), number)
                if self.timing:
                    stamp = datetime.fromisoformat(parts["timestamp"]["valueInstant"])
                    self.latencies.append(received.at - stamp.timestamp())
                    self.by_subscription.setdefault(sub, []).append(self.latencies[-1])

    def wait(self, done: Any, timeout: float) -> float:
        """Seconds until `done(self)` holds; RuntimeError after `timeout`."""
        started = time.monotonic()
        while True:
            self.update()
            if done(self):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"not delivered within {timeout:.0f} s")
            time.sleep(0.05)


def events_since_start(client: httpx.Client) -> dict[str, int]:
    """Each subscription's events so far (type-level $status)."""
    answer = client.get("/Subscription/$status")
    answer.raise_for_status()
    out = {}
    for entry in answer.json().get("entry", []):
        parameters = entry["resource"]["parameter"]
        sub = next(
            p["valueReference"]["reference"].split("/", 1)[1]
            for p in parameters
            if p["name"] == "subscription"
        )
        out[sub] = next(
            int(p["valueString"])
            for p in parameters
            if p["name"] == "events-since-subscription-start"
        )
    return out


def subscribe(client: httpx.Client, tracker: Tracker, url: str, filters: list[str]) -> list[str]:
    ids = []
    for search in filters:
        created = client.post(
            "/Subscription", json=subscription_body(url, search), headers=FHIR_JSON
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    tracker.wait(lambda t: set(ids) <= t.handshakes, 60)  # all active
    return ids


def drain(client: httpx.Client, tracker: Tracker, ids: list[str]) -> float:
    """Seconds until the receiver has every event of `ids` written so far."""
    totals = events_since_start(client)
    return tracker.wait(
        lambda t: all(t.highest.get(i, 0) >= totals.get(i, 0) for i in ids), DRAIN_SECONDS
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(
    client: httpx.Client,
    tracker: Tracker,
    ids: list[str],
    args: argparse.Namespace,
    name: str,
    server_pid: int,
) -> dict[str, Any]:
    """p50/p99 from an event's timestamp to the receiver, over --events creates at --rate;
    and the CPU share the server and this process (writer and receiver) used meanwhile."""
    drain(client, tracker, ids)
    tracker.timing, tracker.latencies, tracker.by_subscription = True, [], {}
    server_cpu, own_cpu = _cpu_seconds(server_pid), time.process_time()
    started = time.perf_counter()
    for i in range(args.events):
        pause = started + i / args.rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        response = client.post("/Task", json=SEED_CREATE)
        assert response.status_code == 201, response.text
    drain(client, tracker, ids)
    elapsed = time.perf_counter() - started
    tracker.timing = False
    values = tracker.latencies
    summary = {
        "server_cpu": (_cpu_seconds(server_pid) - server_cpu) / elapsed,
        "receiver_cpu": (time.process_time() - own_cpu) / elapsed,
        "p50_ms": _percentile(values, 0.50) * 1000,
        "p99_ms": _percentile(values, 0.99) * 1000,
        "max_ms": max(values) * 1000,
        # in the order the subscriptions were created: each one's median
        "p50_ms_by_subscription": [
            statistics.median(tracker.by_subscription[i]) * 1000 for i in ids
        ],
        "deliveries": len(values),
        "events": args.events,
        "rate": args.rate,
    }
    print(
        f"  {name:<10} p50 {summary['p50_ms']:7.1f} ms  p99 {summary['p99_ms']:7.1f} ms  "
        f"({len(values)} deliveries; cpu: server {summary['server_cpu']:.0%}, "
        f"receiver {summary['receiver_cpu']:.0%})",
        file=sys.stderr,
    )
    return summary


# --- report --------------------------------------------------------------------------------


def _table(engine: str, args: argparse.Namespace, results: dict[str, Any]) -> str:
    n = args.subscriptions
    ceiling = results["ceiling"]["rate"]
    none = results["none"]["rate"]
    rows = [
        f"caretask on {engine}, server on 1 core; {args.clients} clients, receiver and load on "
        "the other",
        f"{'creates':<26} {'per s':>8} {'ceiling':>8} {'vs none':>8}",
        f"{'ceiling (ASGI, POST)':<26} {ceiling:>8,.0f}",
    ]
    labels = {
        "none": "0 subscriptions",
        "idle": f"{n} idle subscriptions",
        "notified": f"{n} notified subscriptions",
    }
    for key, label in labels.items():
        rate = results[key]["rate"]
        rows.append(f"{label:<26} {rate:>8,.0f} {rate / ceiling:>8.1%} {rate / none:>8.1%}")
    rows.append(f"  notified backlog drained in {results['notified']['drain_s']:.1f} s (median)")
    rows.append(
        f"{'latency commit→receiver':<26} {'p50 ms':>8} {'p99 ms':>8} {'worst':>8} {'cpu srv':>8} "
        f"{'cpu rcv':>8}  ({args.events} events at {args.rate:g}/s)"
    )
    for key, label in (("latency-1", "1 subscription"), (f"latency-{n}", f"{n} subscriptions")):
        r = results[key]
        worst = max(r["p50_ms_by_subscription"])
        rows.append(
            f"{label:<26} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {worst:>8.1f} "
            f"{r['server_cpu']:>8.0%} {r['receiver_cpu']:>8.0%}"
        )
    rows.append("  worst: the p50 of the subscription whose p50 is highest")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--duration", type=float, default=5, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per scenario")
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--events", type=int, default=300, help="creates timed for latency")
    parser.add_argument("--rate", type=float, default=20, help="creates/s for latency")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    require_tool("taskset", "util-linux")
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    ThreadingHTTPServer.request_queue_size = RECEIVER_BACKLOG
    n = args.subscriptions
    results: dict[str, Any] = {}

    with (
        tempfile.TemporaryDirectory() as tmp,
        database(args.engine, Path(tmp)) as url,
        Receiver() as receiver,
    ):
        workdir = Path(tmp)
        print("ceiling (benchmarks.ceiling on uvicorn):", file=sys.stderr)
        with ceiling_server(workdir) as (ceiling_url, _pid):
            results["ceiling"] = throughput(
                int(ceiling_url.rsplit(":", 1)[1]), None, args, "ceiling"
            )

        server = Server(
            url, workdir, launcher=("taskset", "-c", SERVER_CPU), env=SERVER_ENV
        ).start()
        tracker = Tracker(receiver)
        try:
            token = server.token(SCOPE)
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
                print("caretask serve:", file=sys.stderr)
                results["none"] = throughput(server.port, token, args, "none")

                idle = subscribe(
                    client,
                    tracker,
                    receiver.url,
                    [f"owner=Practitioner/nobody-{i}" for i in range(n)],
                )
                results["idle"] = throughput(server.port, token, args, "idle")
                for sub in idle:
                    assert client.delete(f"/Subscription/{sub}").status_code == 204

                matching = subscribe(client, tracker, receiver.url, ["status=requested"])
                assert server.process is not None
                pid = server.process.pid
                results["latency-1"] = latency(client, tracker, matching, args, "1 notified", pid)
                matching += subscribe(client, tracker, receiver.url, ["status=requested"] * (n - 1))
                results["notified"] = throughput(
                    server.port,
                    token,
                    args,
                    "notified",
                    between=lambda: drain(client, tracker, matching),
                )
                results[f"latency-{n}"] = latency(
                    client, tracker, matching, args, f"{n} notified", pid
                )
        finally:
            server.stop()

    for key in ("idle", "notified"):
        results[key]["vs_none"] = results[key]["rate"] / results["none"]["rate"]
    for key in ("none", "idle", "notified"):
        results[key]["share_of_ceiling"] = results[key]["rate"] / results["ceiling"]["rate"]
    table = _table(args.engine, args, results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"subscriptions-{args.engine}.json"
    document = {
        "engine": args.engine,
        "clients": args.clients,
        "duration_s": args.duration,
        "runs": args.runs,
        "subscriptions": n,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
        "table": table,
    }
    target.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
