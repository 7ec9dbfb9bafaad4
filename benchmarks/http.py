"""HTTP throughput of one caretask server on one core, against a ceiling, driven by wrk.

    python -m benchmarks.http [--engine sqlite|postgresql] [--tasks 100000]
                              [--duration 10] [--runs 3] [--connections 16]
                              [--profile canvas|fhir]

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
    patch          PATCH /Task/{id}, a JSON Patch of the description, with If-Match
    conditional-create
                   POST /Task with If-None-Exist on a new identifier (search, then create)
    transaction    POST / with a transaction Bundle of 100 creates (quoted in tasks/s)
    claim-next     POST /Task/$claim-next for a practitioner, criteria status=requested
                   (the loaded tasks of that status have no owner)
    create-subscribed
                   POST /Task with 100 active rest-hook subscriptions none of whose filters
                   match (owner=Practitioner/nobody-<n>): quoted also as a share of create

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
from caretask.domain import profiles
from tests.support.receiver import Receiver
from tests.support.seed import SEED_CREATE
from tests.support.server import CARETASK, Server, free_port
from tests.support.subscriptions import SCOPE as SUBSCRIBER_SCOPE
from tests.support.subscriptions import subscription_body

HERE = Path(__file__).resolve().parent
FHIR_JSON = {"Content-Type": "application/fhir+json"}
LUA = HERE / "wrk" / "caretask.lua"
SERVER_CPU, LOAD_CPU = "0", "1"
UPDATE_SLICE = 2_000  # ids per wrk run that updates: each run starts from known versions
SCENARIOS = [
    "read", "by-patient", "owner-status", "create", "update", "mix", "patch",
    "conditional-create", "transaction", "claim-next", "create-subscribed",
]  # fmt: skip
MIX_PARTS = {"read": 0.40, "by-patient": 0.15, "owner-status": 0.15, "update": 0.20, "create": 0.10}
WRITES = {"create", "update", "patch", "conditional-create", "transaction", "claim-next"}
CEILING_OF = {
    name: "ceiling-post" if name in WRITES or name == "create-subscribed" else "ceiling-get"
    for name in SCENARIOS
}
TRANSACTION_ENTRIES = 100
SUBSCRIPTIONS = 100
# issue 18's targets: share of the ceiling; the mix as a share of the harmonic mean of its
# parts measured in the same run (what the mix would do if mixing cost nothing)
TARGETS = {"read": 0.15, "by-patient": 0.08, "create": 0.05, "update": 0.04}
MIX_TARGET = 0.70
P99_TARGET_MS = 50


def require_tool(tool: str, hint: str) -> str:
    found = shutil.which(tool)
    if not found:
        sys.exit(f"benchmarks.http needs `{tool}` on PATH ({hint}); it installs nothing itself")
    return found


# --- data ----------------------------------------------------------------------------------


def write_data(
    size: int, workdir: Path, profile: str = profiles.DEFAULT
) -> tuple[Path, dict[str, Any]]:
    """The demo tasks as NDJSON (statuses the profile takes), and values drawn from them
    for the requests."""
    rng = random.Random(5)
    source = workdir / "tasks.ndjson"
    ids, patients, pairs = [], set(), set()
    with open(source, "wb") as out:
        statuses = profiles.statuses(profiles.profile(profile))
        for task in generate(size, seed=1, statuses=statuses):
            if task["status"] == "requested":  # the queue is unassigned, for $claim-next
                del task["owner"]
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


def load_demo_data(
    size: int, workdir: Path, url: str, profile: str = profiles.DEFAULT
) -> tuple[dict[str, Any], float]:
    """Import `size` demo tasks with `caretask import`: the values for the requests, and
    the seconds the import took."""
    print(f"loading {size:,} demo tasks...", file=sys.stderr)
    source, values = write_data(size, workdir, profile)
    started = time.perf_counter()
    subprocess.run([CARETASK, "import", str(source), "--database", url], check=True)
    return values, time.perf_counter() - started


IDENTIFIER_SYSTEM = "urn:caretask:benchmark"
CLAIMANT = "Practitioner/benchmark-claimant"


def transaction_bundle() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.UUID(int=n + 1)}",
                "resource": SEED_CREATE,
                "request": {"method": "POST", "url": "Task"},
            }
            for n in range(TRANSACTION_ENTRIES)
        ],
    }


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def write_lua_data(path: Path, values: dict[str, Any], token: str, update_ids: list[str]) -> None:
    create = {**SEED_CREATE, "for": {"reference": "@PATIENT@"}}
    update = {**SEED_CREATE, "id": "@ID@", "status": "completed"}  # a status both profiles take

    def fmt(body: dict[str, Any], marker: str) -> str:  # a string.format pattern for Lua
        return json.dumps(body).replace("%", "%%").replace(marker, "%s")

    lines = ["return {"]
    lines.append(f"  token = {_lua_string(token)},")
    lines.append(f"  create_body = {_lua_string(fmt(create, '@PATIENT@'))},")
    lines.append(f"  update_body = {_lua_string(fmt(update, '@ID@'))},")
    lines.append(f"  ceiling_body = {_lua_string(json.dumps(SEED_CREATE))},")
    patch = [{"op": "replace", "path": "/description", "value": "Patched @N@"}]
    lines.append(f"  patch_body = {_lua_string(fmt(patch, '@N@').replace('%s', '%d'))},")
    # a new system per run: every run's identifiers are new, so each request creates
    system = f"{IDENTIFIER_SYSTEM}:{uuid.uuid4().hex}"
    lines.append(f"  identifier_system = {_lua_string(system)},")
    identified = {**SEED_CREATE, "identifier": [{"system": system, "value": "@V@"}]}
    lines.append(f"  conditional_body = {_lua_string(fmt(identified, '@V@'))},")
    lines.append(f"  transaction_body = {_lua_string(json.dumps(transaction_bundle()))},")
    claim = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "owner", "valueReference": {"reference": CLAIMANT}},
            {"name": "criteria", "valueString": "status=requested"},
        ],
    }
    lines.append(f"  claim_next_body = {_lua_string(json.dumps(claim))},")
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
        updates = self._update_slice() if scenario in ("update", "mix", "patch") else []
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

    @contextmanager
    def sampled(self, pid: int, scenario: str, first: bool) -> Iterator[None]:
        """With --py-spy DIR, the first measured run of a scenario is sampled by py-spy
        (collapsed stacks, DIR/<engine>-<scenario>.txt); it slows that run somewhat."""
        spy_dir: Path | None = getattr(self.args, "py_spy", None)  # benchmarks.soak's: none
        if not (spy_dir and first):
            yield
            return
        spy_dir.mkdir(parents=True, exist_ok=True)
        target = spy_dir / f"{self.args.engine}-{scenario}.txt"
        command = [
            require_tool("py-spy", "pip install py-spy"), "record", "--pid", str(pid),
            "--subprocesses", "--gil", "--format", "raw", "--rate", "250",
            "--duration", str(self.args.duration), "--output", str(target),
        ]  # fmt: skip
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            spy.wait(self.args.duration + 30)

    def run_wrk(self, url: str, scenario: str, token: str, seconds: int) -> dict[str, Any]:
        command, env = self.wrk_command(url, scenario, token, seconds)
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        return wrk_result(out.returncode, out.stdout, out.stderr)

    def measure(self, url: str, pid: int, scenario: str, token: str) -> dict[str, Any]:
        self.run_wrk(url, scenario, token, self.args.warmup)
        runs = []
        for n in range(self.args.runs):
            cpu = _cpu_seconds(pid)
            with self.sampled(pid, scenario, first=n == 0):
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
            f"  {scenario:<18} {summary['rate']:>9,.0f}/s  p50 {summary['p50_ms']:6.2f} ms  "
            f"p99 {summary['p99_ms']:6.2f} ms  errors {errors}",
            file=sys.stderr,
        )
        return summary


def assess(results: dict[str, dict[str, Any]]) -> None:
    """Each scenario's share of its ceiling and whether it met its target, in place."""
    if "transaction" in results:  # a request is TRANSACTION_ENTRIES creates
        results["transaction"]["tasks_per_s"] = results["transaction"]["rate"] * TRANSACTION_ENTRIES
    for name, r in results.items():
        ceiling = results[CEILING_OF[name]]["rate"] if name in CEILING_OF else None
        work = r.get("tasks_per_s", r["rate"])
        r["share_of_ceiling"] = work / ceiling if ceiling else None
        # a transaction's latency is that of its hundred creates: only its errors count
        r["fast"] = (name == "transaction" or r["p99_ms"] < P99_TARGET_MS) and r["errors"] == 0
        if name in TARGETS:
            r["met"] = r["fast"] and r["share_of_ceiling"] >= TARGETS[name]
    if "create-subscribed" in results and "create" in results:
        share = results["create-subscribed"]["rate"] / results["create"]["rate"]
        results["create-subscribed"]["share_of_create"] = share
    if "mix" in results and all(part in results for part in MIX_PARTS):
        harmonic = 1 / sum(w / results[part]["rate"] for part, w in MIX_PARTS.items())
        mix = results["mix"]
        mix["harmonic_mean_of_parts"] = harmonic
        mix["share_of_parts"] = mix["rate"] / harmonic
        mix["met"] = mix["fast"] and mix["share_of_parts"] >= MIX_TARGET


def subscribe_idle(server: Server, receiver: Receiver) -> None:
    """SUBSCRIPTIONS active rest-hook subscriptions that no benchmark write matches."""
    client = server.client(server.token(SUBSCRIBER_SCOPE))
    ids = []
    for n in range(SUBSCRIPTIONS):
        body = subscription_body(receiver.url, f"owner=Practitioner/nobody-{n}")
        created = client.post("/Subscription", json=body, headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # each is active once its handshake went out
        found = client.get("/Subscription", params={"status": "active", "_count": "0"})
        if found.json()["total"] == SUBSCRIPTIONS:
            return
        time.sleep(0.2)
    raise RuntimeError("the subscriptions did not become active within 60 s")


def _table(engine: str, results: dict[str, dict[str, Any]], connections: int) -> str:
    rows = [
        f"caretask on {engine}, server on 1 core, wrk -t1 -c{connections} on the other",
        f"{'scenario':<18} {'req/s':>9} {'ceiling':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'cpu s/1k':>8}  target",
    ]
    for name, r in results.items():
        share = f"{r['share_of_ceiling']:8.1%}" if r.get("share_of_ceiling") else ""
        verdict = "met" if r.get("met") else "MISSED"
        target = "" if r["fast"] else f"p99 < {P99_TARGET_MS} ms, no errors: MISSED"
        if name in TARGETS:
            target = f">= {TARGETS[name]:.0%} of ceiling, p99 < {P99_TARGET_MS} ms: {verdict}"
        elif name == "mix":
            target = (
                f"{r['share_of_parts']:.0%} of its parts' harmonic mean "
                f"({r['harmonic_mean_of_parts']:,.0f}/s); >= {MIX_TARGET:.0%}: {verdict}"
            )
        elif name == "transaction":
            target = f"{r['tasks_per_s']:,.0f} tasks/s; {target}".rstrip("; ")
        elif name == "create-subscribed" and "share_of_create" in r:
            target = f"{r['share_of_create']:.1%} of create; {target}".rstrip("; ")
        rows.append(
            f"{name:<18} {r['rate']:>9,.0f} {share:>8} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
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
    parser.add_argument("--profile", default=profiles.DEFAULT, choices=profiles.PROFILES)
    parser.add_argument(
        "--py-spy", type=Path, help="sample the server with py-spy into this directory"
    )
    args = parser.parse_args()
    os.environ["CARETASK_PROFILE"] = args.profile  # the import's and the server's
    require_tool("taskset", "util-linux")
    require_tool("wrk", "Debian: apt install wrk")
    scenarios = [s for s in args.scenarios.split(",") if s]

    with tempfile.TemporaryDirectory() as tmp, database(args.engine, Path(tmp)) as url:
        workdir = Path(tmp)
        values, load_s = load_demo_data(args.tasks, workdir, url, args.profile)
        driver = Driver(args, workdir, values)
        results: dict[str, dict[str, Any]] = {}

        print("ceiling (benchmarks.ceiling on uvicorn):", file=sys.stderr)
        with ceiling_server(workdir) as (ceiling_url, pid):
            for scenario in ("ceiling-get", "ceiling-post"):
                results[scenario] = driver.measure(ceiling_url, pid, scenario, "none")

        server = Server(
            url,
            workdir,
            launcher=("taskset", "-c", SERVER_CPU),
            env={"CARETASK_SUBSCRIPTION_ENDPOINTS": "http://127.0.0.1:"},  # the receiver
        ).start()
        try:
            token = server.token()
            print("caretask serve:", file=sys.stderr)
            assert server.process is not None
            with Receiver() as receiver:
                for scenario in scenarios:
                    if scenario == "create-subscribed":
                        subscribe_idle(server, receiver)
                    results[scenario] = driver.measure(
                        server.url, server.process.pid, scenario, token
                    )
        finally:
            server.stop()

    assess(results)
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
