"""HTTP throughput of one caretask server on one core, against a ceiling, driven by wrk.

    python -m benchmarks.http [--engine sqlite|postgresql] [--tasks 100000]
                              [--duration 10] [--runs 3] [--connections 16]

Needs `wrk` (Debian: apt install wrk) and `taskset` (util-linux); installs nothing. It
loads --tasks demo tasks into a fresh database with `caretask import`, starts a real
`caretask serve` pinned to CPU 0 (wrk runs on CPU 1), and for each scenario runs a
warm-up and then --runs measured runs of --duration seconds, quoting the median run:

    read           GET /Task/{id}, random ids of the loaded tasks
    by-patient     GET /Task?patient=..., random patients of the data
    owner-status   GET /Task?owner=...&status=..., pairs that occur in the data
    create         POST /Task
    update         PUT /Task/{id} with If-Match (each id's version followed)
    mix            40% read, 30% search (half each kind), 20% update, 10% create

The ceiling is benchmarks.ceiling (a fixed Task for GET, 201 for POST, no auth, no storage)
on the same uvicorn stack, measured in the same run: reads and searches are quoted as a
share of its GET rate, creates and updates of its POST rate. Server CPU seconds per 1,000
requests are read from /proc. Prints one table and writes benchmarks/results/http-<engine>.json.
PostgreSQL reads CARETASK_BENCH_POSTGRES_URL (or CARETASK_TEST_POSTGRES_URL) and uses a
fresh database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from caretask.bulk.demo import generate
from tests.support.seed import SEED_CREATE
from tests.support.server import CARETASK, Server, free_port

HERE = Path(__file__).resolve().parent
LUA = HERE / "wrk" / "caretask.lua"
SERVER_CPU, LOAD_CPU = "0", "1"
UPDATE_SLICE = 2_000  # ids per wrk run that updates: each run starts from known versions
SCENARIOS = ["read", "by-patient", "owner-status", "create", "update", "mix"]
CEILING_OF = {
    "read": "ceiling-get",
    "by-patient": "ceiling-get",
    "owner-status": "ceiling-get",
    "create": "ceiling-post",
    "update": "ceiling-post",
    "mix": "ceiling-get",
}
# the targets it was written for: share of the ceiling (or requests/s for the mix)
TARGETS = {"read": 0.10, "by-patient": 0.04, "create": 0.04, "update": 0.03}
MIX_TARGET = 1_500
P99_TARGET_MS = 50


def require_tool(tool: str, hint: str) -> str:
    found = shutil.which(tool)
    if not found:
        sys.exit(f"benchmarks.http needs `{tool}` on PATH ({hint}); it installs nothing itself")
    return found


# --- data ----------------------------------------------------------------------------------


def write_data(size: int, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The demo tasks as NDJSON, and values drawn from them for the requests."""
    rng = random.Random(5)
    source = workdir / "tasks.ndjson"
    ids, patients, pairs = [], set(), set()
    with open(source, "wb") as out:
        for task in generate(size, seed=1):
            out.write(json.dumps(task, separators=(",", ":")).encode() + b"\n")
            ids.append(task["id"])
            if "for" in task:
                patients.add(task["for"]["reference"])
            if "owner" in task:
                pairs.add((task["owner"]["reference"], task["status"]))
    rng.shuffle(ids)
    values = {
        "read_ids": ids[: min(20_000, size // 2)],
        "update_ids": ids[size // 2 :],
        "patients": rng.sample(sorted(patients), min(5_000, len(patients))),
        "owner_status": [
            urlencode({"owner": owner, "status": status})
            for owner, status in rng.sample(sorted(pairs), min(5_000, len(pairs)))
        ],
    }
    return source, values


def load_demo_data(size: int, workdir: Path, url: str) -> tuple[dict[str, Any], float]:
    """Import `size` demo tasks with `caretask import`: the values for the requests, and
    the seconds the import took."""
    print(f"loading {size:,} demo tasks...", file=sys.stderr)
    source, values = write_data(size, workdir)
    started = time.perf_counter()
    subprocess.run([CARETASK, "import", str(source), "--database", url], check=True)
    return values, time.perf_counter() - started


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def write_lua_data(path: Path, values: dict[str, Any], token: str, update_ids: list[str]) -> None:
    create = {**SEED_CREATE, "for": {"reference": "@PATIENT@"}}
    update = {**SEED_CREATE, "id": "@ID@", "status": "in-progress"}

    def fmt(body: dict[str, Any], marker: str) -> str:  # a string.format pattern for Lua
        return json.dumps(body).replace("%", "%%").replace(marker, "%s")

    lines = ["return {"]
    lines.append(f"  token = {_lua_string(token)},")
    lines.append(f"  create_body = {_lua_string(fmt(create, '@PATIENT@'))},")
    lines.append(f"  update_body = {_lua_string(fmt(update, '@ID@'))},")
    lines.append(f"  ceiling_body = {_lua_string(json.dumps(SEED_CREATE))},")
    for name in ("read_ids", "patients", "owner_status"):
        lines.append(f"  {name} = {{{', '.join(json.dumps(v) for v in values[name])}}},")
    lines.append(f"  update_ids = {{{', '.join(json.dumps(v) for v in update_ids)}}},")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


# --- servers -------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (uvicorn's workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants, from /proc."""
    ticks = 0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def ceiling_server(workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    log = open(workdir / "ceiling.log", "ab")  # noqa: SIM115 (closed below)
    command = [
        "taskset", "-c", SERVER_CPU, sys.executable, "-m", "uvicorn",
        "benchmarks.ceiling:app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--no-server-header", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=HERE.parent,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@contextmanager
def database(engine: str, workdir: Path) -> Iterator[str]:
    if engine == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    import psycopg
    from psycopg import sql

    base = os.environ.get("CARETASK_BENCH_POSTGRES_URL") or os.environ.get(
        "CARETASK_TEST_POSTGRES_URL"
    )
    if not base:
        sys.exit("set CARETASK_BENCH_POSTGRES_URL (or CARETASK_TEST_POSTGRES_URL)")
    name = f"caretask_http_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- wrk -----------------------------------------------------------------------------------


def wrk_result(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The CARETASK_RESULT line that caretask.lua's done() prints."""
    if returncode:
        raise RuntimeError(f"wrk failed:\n{stdout}\n{stderr}")
    for line in stdout.splitlines():
        if line.startswith("CARETASK_RESULT "):
            return json.loads(line.removeprefix("CARETASK_RESULT "))
    raise RuntimeError(f"wrk printed no result:\n{stdout}\n{stderr}")


class Driver:
    def __init__(self, args: argparse.Namespace, workdir: Path, values: dict[str, Any]) -> None:
        self.args = args
        self.workdir = workdir
        self.values = values
        self.wrk = require_tool("wrk", "Debian: apt install wrk")
        self.next_update = 0

    def _update_slice(self) -> list[str]:
        pool = self.values["update_ids"]
        start = self.next_update
        self.next_update += UPDATE_SLICE
        if self.next_update > len(pool):
            sys.exit("not enough tasks for fresh update ids in every run: raise --tasks")
        return pool[start : start + UPDATE_SLICE]

    def wrk_command(
        self, url: str, scenario: str, token: str, seconds: int, rate: float | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """wrk's command line and environment for one run; `rate` (requests/s) paces it."""
        data = self.workdir / f"data-{scenario}.lua"
        updates = self._update_slice() if scenario in ("update", "mix") else []
        write_lua_data(data, self.values, token, updates)
        env = {
            **os.environ,
            "CARETASK_WRK_DATA": str(data),
            "CARETASK_WRK_SCENARIO": scenario,
            "CARETASK_WRK_THREADS": "1",
        }
        if rate is not None:
            env["CARETASK_WRK_RATE"] = str(rate)
        command = [
            "taskset", "-c", LOAD_CPU, self.wrk, "-t1", f"-c{self.args.connections}",
            f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA), url,
        ]  # fmt: skip
        return command, env

    def run_wrk(self, url: str, scenario: str, token: str, seconds: int) -> dict[str, Any]:
        command, env = self.wrk_command(url, scenario, token, seconds)
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        return wrk_result(out.returncode, out.stdout, out.stderr)

    def measure(self, url: str, pid: int, scenario: str, token: str) -> dict[str, Any]:
        self.run_wrk(url, scenario, token, self.args.warmup)
        runs = []
        for _ in range(self.args.runs):
            cpu = _cpu_seconds(pid)
            result = self.run_wrk(url, scenario, token, self.args.duration)
            result["server_cpu_s"] = _cpu_seconds(pid) - cpu
            result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
            runs.append(result)
        median = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
        errors = sum(r["socket_errors"] + r["non2xx"] + r["status_errors"] for r in runs)
        if scenario.startswith("ceiling"):  # no response hook there: wrk's count is exact
            errors = sum(r["socket_errors"] + r["status_errors"] for r in runs)
        summary = {
            "rate": median["rate"],
            "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
            "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
            "errors": errors,
            "requests": sum(r["requests"] for r in runs),
            "cpu_s_per_1000": statistics.median(
                r["server_cpu_s"] / r["requests"] * 1000 for r in runs
            ),
            "runs": runs,
        }
        print(
            f"  {scenario:<13} {summary['rate']:>9,.0f}/s  p50 {summary['p50_ms']:6.2f} ms  "
            f"p99 {summary['p99_ms']:6.2f} ms  errors {errors}",
            file=sys.stderr,
        )
        return summary


def _table(engine: str, results: dict[str, dict[str, Any]], connections: int) -> str:
    rows = [
        f"caretask on {engine}, server on 1 core, wrk -t1 -c{connections} on the other",
        f"{'scenario':<13} {'req/s':>9} {'ceiling':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'cpu s/1k':>8}  target",
    ]
    for name, r in results.items():
        ceiling = results.get(CEILING_OF.get(name, ""), {}).get("rate")
        share = f"{r['rate'] / ceiling:8.1%}" if ceiling and not name.startswith("ceil") else ""
        target = ""
        if name in TARGETS:
            target = f">= {TARGETS[name]:.0%}: {'met' if r.get('met') else 'MISSED'}"
        elif name == "mix":
            target = f">= {MIX_TARGET}/s: {'met' if r.get('met') else 'MISSED'}"
        rows.append(
            f"{name:<13} {r['rate']:>9,.0f} {share:>8} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['errors']:>6} {r['cpu_s_per_1000']:>8.3f}  {target}"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per scenario")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per scenario")
    parser.add_argument("--connections", type=int, default=16, help="wrk's -c")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    require_tool("taskset", "util-linux")
    require_tool("wrk", "Debian: apt install wrk")
    scenarios = [s for s in args.scenarios.split(",") if s]

    with tempfile.TemporaryDirectory() as tmp, database(args.engine, Path(tmp)) as url:
        workdir = Path(tmp)
        values, load_s = load_demo_data(args.tasks, workdir, url)
        driver = Driver(args, workdir, values)
        results: dict[str, dict[str, Any]] = {}

        print("ceiling (benchmarks.ceiling on uvicorn):", file=sys.stderr)
        with ceiling_server(workdir) as (ceiling_url, pid):
            for scenario in ("ceiling-get", "ceiling-post"):
                results[scenario] = driver.measure(ceiling_url, pid, scenario, "none")

        server = Server(url, workdir, launcher=("taskset", "-c", SERVER_CPU)).start()
        try:
            token = server.token()
            print("caretask serve:", file=sys.stderr)
            assert server.process is not None
            for scenario in scenarios:
                results[scenario] = driver.measure(server.url, server.process.pid, scenario, token)
        finally:
            server.stop()

    for name, r in results.items():
        ceiling = results[CEILING_OF[name]]["rate"] if name in CEILING_OF else None
        r["share_of_ceiling"] = r["rate"] / ceiling if ceiling else None
        fast = r["p99_ms"] < P99_TARGET_MS and r["errors"] == 0
        if name in TARGETS:
            r["met"] = fast and r["share_of_ceiling"] >= TARGETS[name]
        elif name == "mix":
            r["met"] = fast and r["rate"] >= MIX_TARGET
    table = _table(args.engine, results, args.connections)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"http-{args.engine}.json"
    target.write_text(
        json.dumps(
            {
                "engine": args.engine,
                "tasks": args.tasks,
                "import_seconds": round(load_s, 1),
                "connections": args.connections,
                "duration_s": args.duration,
                "runs": args.runs,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "results": results,
                "table": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
