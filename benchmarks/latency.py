"""Median latency of one create and one search, on a real server with a fresh database.

    python -m benchmarks.latency [--engine sqlite] [--tasks 2000] [--samples 300]

Sequential requests from one client over loopback keep-alive, so the figures are the
server's own latency per request, not its throughput. Prints a table, writes JSON to
benchmarks/results/latency-<engine>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.support.seed import SEED_CREATE
from tests.support.server import Server


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="sqlite", choices=["sqlite"])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks stored before measuring")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = Server(f"sqlite:///{workdir / 'bench.db'}", workdir).start()
        try:
            token = server.token()
            patients = [uuid.uuid4().hex for _ in range(max(1, args.tasks // 20))]
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {token}"}
            ) as client:
                for i in range(args.tasks):
                    body = {
                        **SEED_CREATE,
                        "for": {"reference": f"Patient/{patients[i % len(patients)]}"},
                    }
                    assert client.post("/Task", json=body).status_code == 201
                timings: dict[str, list[float]] = {"create": [], "search by patient": []}
                for i in range(args.samples):
                    body = {
                        **SEED_CREATE,
                        "for": {"reference": f"Patient/{patients[i % len(patients)]}"},
                    }
                    started = time.perf_counter()
                    response = client.post("/Task", json=body)
                    timings["create"].append(time.perf_counter() - started)
                    assert response.status_code == 201
                    started = time.perf_counter()
                    response = client.get("/Task", params={"patient": patients[i % len(patients)]})
                    timings["search by patient"].append(time.perf_counter() - started)
                    assert response.status_code == 200
        finally:
            server.stop()

    results = {
        name: {
            "median_ms": round(statistics.median(values) * 1000, 2),
            "p95_ms": round(_percentile(values, 0.95) * 1000, 2),
            "samples": len(values),
        }
        for name, values in timings.items()
    }
    print(f"engine={args.engine} stored_tasks={args.tasks} samples={args.samples}")
    print(f"{'request':<20}{'median ms':>12}{'p95 ms':>10}")
    for name, figures in results.items():
        print(f"{name:<20}{figures['median_ms']:>12}{figures['p95_ms']:>10}")
    out = Path(__file__).parent / "results" / f"latency-{args.engine}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "engine": args.engine,
                "stored_tasks": args.tasks,
                "machine": platform.node(),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
