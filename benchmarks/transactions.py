"""Tasks/s of a 100-entry transaction Bundle against 100 single creates, and the latency of
a PATCH (JSON Patch, FHIRPath Patch) against a PUT of the same change, on one keep-alive
connection.

    python -m benchmarks.transactions [--engine sqlite|postgresql] [--entries 100]
                                      [--runs 7] [--samples 300]

Needs `taskset` (util-linux); installs nothing. Starts a real `caretask serve` on a fresh
database pinned to CPU 0 (this client runs on CPU 1) and, over one keep-alive connection,
sends one request after another:

    singles        --entries POST /Task, one after another
    transaction    one POST / transaction Bundle of --entries creates
    batch          the same entries as a batch Bundle (each entry its own transaction)
    put            PUT /Task/{id} changing status to completed (p50/p99 of --samples)
    patch          PATCH /Task/{id} with the JSON Patch of the same change
    fhirpath-patch PATCH /Task/{id} with the FHIRPath Patch of the same change

Each throughput scenario is a warm-up and then --runs measured runs; the median run is
quoted, in tasks written per second. The ceiling is benchmarks.ceiling (no auth, no
storage) on the same uvicorn stack, measured in the same run with the same requests: its
rate is what the server, the event loop and this client cost. Prints one table and writes
benchmarks/results/transactions-<engine>.json. PostgreSQL reads
CARETASK_BENCH_POSTGRES_URL (or CARETASK_TEST_POSTGRES_URL) and uses a fresh database,
dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.http import LOAD_CPU, SERVER_CPU, ceiling_server, database, require_tool
from tests.support.seed import SEED_CREATE
from tests.support.server import Server

HERE = Path(__file__).resolve().parent
THROUGHPUT = ("singles", "transaction", "batch")
CHANGE = {"status": "completed"}  # a status both profiles take
JSON_PATCH = [{"op": "replace", "path": "/status", "value": "completed"}]
FHIRPATH_PATCH = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "replace"},
                {"name": "path", "valueString": "Task.status"},
                {"name": "value", "valueCode": "completed"},
            ],
        }
    ],
}
CHANGES = ("put", "patch", "fhirpath-patch")


def _task() -> dict[str, Any]:
    return {**SEED_CREATE, "for": {"reference": f"Patient/{uuid.uuid4().hex}"}}


def _bundle(kind: str, entries: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": _task(),
                "request": {"method": "POST", "url": "Task"},
            }
            for _ in range(entries)
        ],
    }


# each sender's `real`: whether the server is caretask (whose answers are checked) or the
# ceiling (which answers any POST 201, empty)


def _singles(client: httpx.Client, entries: int, real: bool) -> None:
    for _ in range(entries):
        response = client.post("/Task", json=_task())
        assert response.status_code == 201, response.text


def _bundled(kind: str) -> Callable[[httpx.Client, int, bool], None]:
    def send(client: httpx.Client, entries: int, real: bool) -> None:
        response = client.post("/", json=_bundle(kind, entries))
        assert response.status_code == (200 if real else 201), response.text
        if real:  # every entry made a task
            statuses = {e["response"]["status"] for e in response.json()["entry"]}
            assert statuses == {"201 Created"}, statuses

    return send


SENDERS: dict[str, Callable[[httpx.Client, int, bool], None]] = {
    "singles": _singles,
    "transaction": _bundled("transaction"),
    "batch": _bundled("batch"),
}


def throughput(
    client: httpx.Client, scenario: str, args: argparse.Namespace, real: bool
) -> dict[str, Any]:
    """Tasks/s of a scenario: the median of --runs runs after one warm-up."""
    send = SENDERS[scenario]
    send(client, args.entries, real)
    rates = []
    for _ in range(args.runs):
        started = time.perf_counter()
        send(client, args.entries, real)
        rates.append(args.entries / (time.perf_counter() - started))
    summary = {"tasks_per_s": statistics.median(rates), "runs": rates}
    print(f"  {scenario:<12} {summary['tasks_per_s']:>9,.0f} tasks/s", file=sys.stderr)
    return summary


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(client: httpx.Client, scenario: str, samples: int) -> dict[str, Any]:
    """p50/p99 of a PUT or a PATCH making the same change to a task of its own each time."""
    ids = []
    for _ in range(samples):
        response = client.post("/Task", json=_task())
        ids.append(response.headers["location"].rsplit("/", 1)[1])
    bodies = {
        "patch": ("application/json-patch+json", json.dumps(JSON_PATCH).encode()),
        "fhirpath-patch": ("application/fhir+json", json.dumps(FHIRPATH_PATCH).encode()),
    }

    def send(task_id: str) -> httpx.Response:
        if scenario == "put":
            return client.put(f"/Task/{task_id}", json={**_task(), **CHANGE})
        media, body = bodies[scenario]
        return client.patch(f"/Task/{task_id}", content=body, headers={"Content-Type": media})

    timings = []
    for task_id in ids:
        started = time.perf_counter()
        response = send(task_id)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    summary = {
        "p50_ms": _percentile(timings, 0.50) * 1000,
        "p99_ms": _percentile(timings, 0.99) * 1000,
        "samples": len(timings),
    }
    print(
        f"  {scenario:<14} p50 {summary['p50_ms']:6.2f} ms  p99 {summary['p99_ms']:6.2f} ms",
        file=sys.stderr,
    )
    return summary


def _table(engine: str, entries: int, results: dict[str, Any]) -> str:
    rows = [
        f"caretask on {engine}, server on 1 core, one keep-alive client on the other",
        f"{'scenario':<13} {'tasks/s':>9} {'ceiling':>9} {'share':>7}   ({entries} tasks each)",
    ]
    for name in THROUGHPUT:
        ours, ceiling = results[name]["tasks_per_s"], results[f"ceiling-{name}"]["tasks_per_s"]
        rows.append(f"{name:<13} {ours:>9,.0f} {ceiling:>9,.0f} {ours / ceiling:>7.1%}")
    singles = results["singles"]["tasks_per_s"]
    rows.append(
        f"a transaction writes {results['transaction']['tasks_per_s'] / singles:.1f}x the tasks/s "
        "of single creates"
    )
    rows.append(f"{'change':<15} {'p50 ms':>7} {'p99 ms':>7}")
    for name in CHANGES:
        r = results[name]
        rows.append(f"{name:<15} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--entries", type=int, default=100, help="tasks per scenario run")
    parser.add_argument("--runs", type=int, default=7, help="measured runs per scenario")
    parser.add_argument("--samples", type=int, default=300, help="PUTs and PATCHes timed")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    require_tool("taskset", "util-linux")
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    results: dict[str, Any] = {}

    with tempfile.TemporaryDirectory() as tmp, database(args.engine, Path(tmp)) as url:
        workdir = Path(tmp)
        print("ceiling (benchmarks.ceiling on uvicorn):", file=sys.stderr)
        with (
            ceiling_server(workdir) as (ceiling_url, _pid),
            httpx.Client(base_url=ceiling_url) as client,
        ):
            for scenario in THROUGHPUT:
                results[f"ceiling-{scenario}"] = throughput(client, scenario, args, False)
        server = Server(url, workdir, launcher=("taskset", "-c", SERVER_CPU)).start()
        try:
            headers = {"Authorization": f"Bearer {server.token()}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
                print("caretask serve:", file=sys.stderr)
                for scenario in THROUGHPUT:
                    results[scenario] = throughput(client, scenario, args, True)
                for scenario in CHANGES:
                    results[scenario] = latency(client, scenario, args.samples)
        finally:
            server.stop()

    table = _table(args.engine, args.entries, results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"transactions-{args.engine}.json"
    document = {
        "engine": args.engine,
        "entries": args.entries,
        "runs": args.runs,
        "samples": args.samples,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
        "table": table,
    }
    target.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
