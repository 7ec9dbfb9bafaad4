"""p50 and p99 latency of a PATCH against a PUT of the same change, on a real server.

    python -m benchmarks.patch [--engine sqlite|postgresql] [--samples 500]

One client, sequential requests over loopback keep-alive, each changing the status of one
task back and forth: a PUT sends the whole Task, a JSON Patch one `replace`, a FHIRPath
Patch one `replace` operation (its path parsed and evaluated by fhirpathpy). Prints a table
and writes benchmarks/results/patch-<engine>.json. PostgreSQL needs
CARETASK_TEST_POSTGRES_URL: a scratch database is made there, and dropped after.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.databases import POSTGRES_URL, postgres_database
from tests.support.seed import SEED_CREATE
from tests.support.server import Server

STATUSES = ("completed", "requested")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _requests(client: httpx.Client, task_id: str) -> dict[str, Callable[[str], httpx.Response]]:
    url = f"/Task/{task_id}"

    def put(status: str) -> httpx.Response:
        return client.put(url, json={**SEED_CREATE, "status": status})

    def json_patch(status: str) -> httpx.Response:
        change = [{"op": "replace", "path": "/status", "value": status}]
        return client.patch(
            url, json=change, headers={"Content-Type": "application/json-patch+json"}
        )

    def fhirpath_patch(status: str) -> httpx.Response:
        parts: list[dict[str, Any]] = [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Task.status"},
            {"name": "value", "valueCode": status},
        ]
        body = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}
        return client.patch(url, json=body, headers={"Content-Type": "application/fhir+json"})

    return {"PUT": put, "PATCH (JSON Patch)": json_patch, "PATCH (FHIRPath)": fhirpath_patch}


def measure(database: str, workdir: Path, samples: int) -> dict[str, dict[str, float]]:
    with Server(database, workdir) as server:
        token = server.token()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers) as client:
            created = client.post("/Task", json=SEED_CREATE)
            assert created.status_code == 201, created.text
            task_id = created.headers["location"].rsplit("/", 1)[1]
            kinds = _requests(client, task_id)
            timings: dict[str, list[float]] = {name: [] for name in kinds}
            for i in range(samples + 20):  # the first 20 warm up
                for name, send in kinds.items():
                    started = time.perf_counter()
                    response = send(STATUSES[i % 2])
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 200, response.text
                    if i >= 20:
                        timings[name].append(elapsed)
    return {
        name: {
            "p50_ms": round(_percentile(values, 0.50) * 1000, 2),
            "p99_ms": round(_percentile(values, 0.99) * 1000, 2),
            "samples": len(values),
        }
        for name, values in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.engine == "postgresql":
            if not POSTGRES_URL:
                raise SystemExit("set CARETASK_TEST_POSTGRES_URL to benchmark PostgreSQL")
            with postgres_database() as database:
                results = measure(database, workdir, args.samples)
        else:
            results = measure(f"sqlite:///{workdir / 'bench.db'}", workdir, args.samples)
    print(f"engine={args.engine} samples={args.samples} (one task, status changed each time)")
    print(f"{'request':<22}{'p50 ms':>10}{'p99 ms':>10}")
    for name, figures in results.items():
        print(f"{name:<22}{figures['p50_ms']:>10}{figures['p99_ms']:>10}")
    out = Path(__file__).parent / "results" / f"patch-{args.engine}.json"
    out.parent.mkdir(exist_ok=True)
    machine = {"engine": args.engine, "machine": platform.node(), "results": results}
    out.write_text(json.dumps(machine, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
