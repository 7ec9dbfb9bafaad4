"""Search latency against table size: 10k against 1M tasks, on both engines.

    python -m benchmarks.scale [--sizes 10000,1000000] [--engines sqlite,postgresql]
                               [--samples 200] [--data benchmarks/data]

For each engine and size it loads `caretask demo-data N` with `caretask import` (timed;
the loaded database is kept in --data and reused), starts a real `caretask serve`, and
sends each query --samples times, sequentially over one keep-alive connection, with
values drawn from the data (a different patient, owner, label... each time). Prints p50
and p95 per query and size, the 1M/10k ratio against the issue's goals, and writes JSON
to benchmarks/results/scale.json. PostgreSQL reads CARETASK_BENCH_POSTGRES_URL (or
CARETASK_TEST_POSTGRES_URL) and keeps a database per size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from caretask.bulk.demo import generate
from tests.support.server import CARETASK, Server

Query = Callable[[random.Random], dict[str, Any]]


def _samples(size: int, count: int = 3_000) -> dict[str, list[Any]]:
    """Values that occur in the data: the generator is deterministic for a seed."""
    picked: dict[str, list[Any]] = {k: [] for k in ("id", "patient", "owner", "requester")}
    picked |= {"label": [], "group": [], "description": [], "due": []}
    for task in generate(min(size, count)):
        picked["id"].append(task["id"])
        picked["patient"].append(task["for"]["reference"].split("/")[1])
        picked["owner"].append(task["owner"]["reference"].split("/")[1])
        picked["requester"].append(task["requester"]["reference"].split("/")[1])
        picked["group"].append(task["extension"][0]["valueReference"]["reference"])
        picked["description"].append(task["description"])
        picked["due"].append(task["restriction"]["period"]["end"][:10])
        picked["label"] += [i["valueString"] for i in task.get("input", [])]
    return picked


def queries(size: int) -> dict[str, Query]:
    v = _samples(size)
    statuses = ["requested", "in-progress", "completed", "ready", "on-hold", "draft"]
    deep = 500_000 if size > 500_000 else size // 2

    def week(rng: random.Random) -> list[tuple[str, str]]:
        day = rng.choice(v["due"])
        return [("due", f"ge{day}"), ("due", f"lt{day[:8]}{min(int(day[8:]) + 7, 28):02d}")]

    return {
        "_id": lambda r: {"_id": r.choice(v["id"])},
        "patient": lambda r: {"patient": r.choice(v["patient"])},
        "owner": lambda r: {"owner": r.choice(v["owner"])},
        "requester": lambda r: {"requester": r.choice(v["requester"])},
        "label": lambda r: {"label": r.choice(v["label"])},
        "status": lambda r: {"status": r.choice(statuses)},
        "group": lambda r: {"group": r.choice(v["group"])},
        "due (a week)": lambda r: {"_pairs": week(r)},
        "owner + status": lambda r: {"owner": r.choice(v["owner"]), "status": "requested"},
        "description prefix": lambda r: {"description": r.choice(v["description"])[:12]},
        "description:contains": lambda r: {
            "description:contains": r.choice(v["description"]).rsplit(" ", 1)[1]
        },
        "first page": lambda r: {"_offset": 0},
        # offset 500,000 at 1M tasks; half the table at smaller sizes
        "deep page": lambda r: {"_offset": deep + r.randrange(100)},
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _postgres_url(size: int) -> str:
    base = os.environ.get("CARETASK_BENCH_POSTGRES_URL") or os.environ.get(
        "CARETASK_TEST_POSTGRES_URL"
    )
    if not base:
        raise SystemExit("set CARETASK_BENCH_POSTGRES_URL to benchmark PostgreSQL")
    return urlunsplit(urlsplit(base)._replace(path=f"/caretask_bench_{size}"))


def _ensure_postgres_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        name = parts.path.lstrip("/")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def load(engine: str, size: int, data: Path) -> tuple[str, float | None]:
    """A database holding `size` demo tasks; the import's seconds when it ran now."""
    marker = data / f"{engine}-{size}.loaded"
    if engine == "sqlite":
        url = f"sqlite:///{(data / f'sqlite-{size}.db').resolve()}"
    else:
        url = _postgres_url(size)
        _ensure_postgres_database(url)
    if marker.exists():
        return url, None
    source = data / f"demo-{size}.ndjson"
    if not source.exists():
        with open(source, "wb") as out:
            subprocess.run([CARETASK, "demo-data", str(size)], stdout=out, check=True)
    started = time.perf_counter()
    subprocess.run([CARETASK, "import", str(source), "--database", url], check=True)
    seconds = time.perf_counter() - started
    marker.write_text(f"{seconds:.1f}\n")
    return url, seconds


def measure(server: Server, size: int, samples: int, total: str) -> dict[str, dict[str, float]]:
    token = server.token()
    rng = random.Random(42)
    out = {}
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as client:
        for _ in range(3):  # warm the connection pool, caches and plans first
            for make in queries(size).values():
                params = make(rng)
                pairs = params.pop("_pairs", [])
                client.get("/Task", params=[*params.items(), *pairs])
        for name, make in queries(size).items():
            timings = []
            for i in range(samples + 5):
                params = make(rng)
                pairs = params.pop("_pairs", [])
                query = [*params.items(), *pairs]
                if total != "accurate":
                    query.append(("_total", total))
                started = time.perf_counter()
                response = client.get("/Task", params=query)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                if i >= 5:  # the first few warm the caches
                    timings.append(elapsed)
            out[name] = {
                "p50_ms": round(statistics.median(timings) * 1000, 2),
                "p95_ms": round(_percentile(timings, 0.95) * 1000, 2),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--data", type=Path, default=Path("benchmarks/data"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "samples": args.samples,
        "engines": {},
    }
    for engine in args.engines.split(","):
        per_size: dict[str, Any] = {}
        for size in sizes:
            url, seconds = load(engine, size, args.data)
            server = Server(url, args.data).start()
            try:
                per_size[str(size)] = {
                    "import_seconds": seconds,
                    "total=accurate": measure(server, size, args.samples, "accurate"),
                    "total=none": measure(server, size, args.samples, "none"),
                }
            finally:
                server.stop()
            print(f"measured {engine} at {size:,} tasks", file=sys.stderr)
        results["engines"][engine] = per_size
        _print(engine, sizes, per_size)
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2))


def _print(engine: str, sizes: list[int], per_size: dict[str, Any]) -> None:
    small, large = str(sizes[0]), str(sizes[-1])
    for mode in ("total=accurate", "total=none"):
        print(f"\n{engine}, {mode}: p50 / p95 ms")
        print(f"{'query':<30}" + "".join(f"{int(s):>20,}" for s in sizes) + f"{'ratio p50':>11}")
        names = list(per_size[small][mode])
        for name in names:
            cells = ""
            for s in sizes:
                figures = per_size[str(s)][mode].get(name)
                blank = " " * 20
                cells += f"{figures['p50_ms']:>11} / {figures['p95_ms']:<6}" if figures else blank
            ratio = ""
            if name in per_size[large][mode] and name in per_size[small][mode]:
                big = per_size[large][mode][name]["p50_ms"]
                ratio = f"{big / per_size[small][mode][name]['p50_ms']:.2f}"
            print(f"{name:<30}{cells}{ratio:>11}")
        deep = per_size[large][mode]["deep page"]["p50_ms"]
        first = per_size[large][mode]["first page"]["p50_ms"]
        print(f"deep page / first page at {int(large):,}: {deep / first:.2f}")
    imports = ", ".join(f"{s}: {per_size[str(s)]['import_seconds']}" for s in sizes)
    print(f"import seconds (None: loaded earlier): {imports}")


if __name__ == "__main__":
    main()
