"""Soak: the CRUD mix held at 70% of its maximum rate for a long time, against two goals.

    python -m benchmarks.soak --engine sqlite|postgresql [--minutes 30] [--tasks 100000]
                              [--load 0.7] [--connections 16] [--sample-seconds 30]

Throughput runs last seconds; leaks, growing caches, WAL or connection build-up and slow
degradation show only over many minutes. Like benchmarks.http (whose helpers it uses) it
loads --tasks demo tasks into a fresh database, starts a real `caretask serve` pinned to
CPU 0 with wrk on CPU 1, and then:

1. warms up, and measures the maximum rate of the mix (40% read, 30% search, 20% update
   with If-Match, 10% create) with a short unpaced wrk run;
2. holds the mix at --load (70%) of that maximum for --minutes, paced from caretask.lua
   (wrk's delay() hook: Debian's wrk has no rate option);
3. samples the server's RSS (its process and any workers, from /proc) when the paced run
   starts, after the warm-up, and every --sample-seconds, along with the requests and
   non-2xx answers the server logged in between.

Goals: no errors (non-2xx answers and socket errors) and RSS growth under 10% from the
first sample to the last. The run counts only if the achieved rate is within 5% of the
target. Prints a table and writes benchmarks/results/soak-<engine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.http import (
    HERE,
    SERVER_CPU,
    Driver,
    database,
    load_demo_data,
    process_tree,
    require_tool,
    wrk_result,
)
from tests.support.server import Server

MAX_ERRORS = 0
MAX_RSS_GROWTH = 0.10
RATE_TOLERANCE = 0.05
MAX_RUN_SECONDS = 15
# the end of caretask's access-log line: "... GET /Task/<id> 200 3.1ms"
ACCESS_LINE = re.compile(rb" (\d{3}) [\d.]+ms$")


def rss_bytes(pid: int) -> int:
    """Resident memory of a server and its workers."""
    total = 0
    for current in process_tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class AccessCounter:
    """Requests and non-2xx answers in the server's log since the last call: the rate over
    each sample interval, which wrk reports only for the whole run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size
        self.partial = b""

    def take(self) -> tuple[int, int]:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            data = self.partial + log.read()
        self.offset += len(data) - len(self.partial)
        *lines, self.partial = data.split(b"\n")
        requests = non2xx = 0
        for line in lines:
            match = ACCESS_LINE.search(line.rstrip())
            if match:
                requests += 1
                non2xx += not 200 <= int(match.group(1)) <= 299
        return requests, non2xx


def soak(args: argparse.Namespace, driver: Driver, server: Server, token: str) -> dict[str, Any]:
    assert server.process is not None and server.log_path is not None
    pid = server.process.pid
    print("warm-up and maximum rate of the mix...", file=sys.stderr)
    driver.run_wrk(server.url, "mix", token, 5)
    peak = driver.run_wrk(server.url, "mix", token, MAX_RUN_SECONDS)
    max_rate = peak["requests"] / (peak["duration_us"] / 1e6)
    target = max_rate * args.load
    seconds = round(args.minutes * 60)
    print(f"maximum {max_rate:,.0f}/s; holding {target:,.0f}/s for {seconds} s...", file=sys.stderr)

    command, env = driver.wrk_command(server.url, "mix", token, seconds, rate=target)
    counter = AccessCounter(server.log_path)
    started = time.monotonic()
    samples = [_sample(pid, counter, 0.0, 0.0)]
    wrk = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = started
    while True:
        try:
            wrk.wait(timeout=max(args.sample_seconds - (time.monotonic() - last), 0.1))
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - last >= args.sample_seconds:
            samples.append(_sample(pid, counter, now - started, now - last))
            last = now
            _print_sample(samples[-1])
    out, err = wrk.communicate()
    now = time.monotonic()
    final = _sample(pid, counter, now - started, now - last)  # before the server stops
    if final["interval_s"] < 1 and len(samples) > 1:  # wrk ended just after a sample
        previous = samples.pop()
        for key in ("requests", "non2xx", "interval_s"):
            final[key] += previous[key]
        final["rate"] = final["requests"] / final["interval_s"]
    else:
        _print_sample(final)
    samples.append(final)
    result = wrk_result(wrk.returncode, out.decode(), err.decode())
    achieved = result["requests"] / (result["duration_us"] / 1e6)
    rss_start, rss_end = samples[0]["rss_bytes"], samples[-1]["rss_bytes"]
    errors = result["non2xx"] + result["socket_errors"]  # wrk's status errors are non-2xx
    growth = (rss_end - rss_start) / rss_start
    checks = {
        "errors": errors <= MAX_ERRORS,
        "rss_growth": growth < MAX_RSS_GROWTH,
        "rate_held": abs(achieved / target - 1) <= RATE_TOLERANCE,
    }
    return {
        "max_rate": max_rate,
        "target_rate": target,
        "achieved_rate": achieved,
        "requests": result["requests"],
        "errors": errors,
        "non2xx": result["non2xx"],
        "socket_errors": result["socket_errors"],
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "rss_start_bytes": rss_start,
        "rss_end_bytes": rss_end,
        "rss_growth": growth,
        "samples": samples,
        "checks": checks,
        "passed": all(checks.values()),
    }


def _sample(pid: int, counter: AccessCounter, elapsed: float, interval: float) -> dict[str, Any]:
    requests, non2xx = counter.take()
    return {
        "t_s": round(elapsed, 1),
        "interval_s": interval,
        "rss_bytes": rss_bytes(pid),
        "requests": requests,
        "rate": requests / interval if interval > 0 else None,
        "non2xx": non2xx,
    }


def _print_sample(sample: dict[str, Any]) -> None:
    print(
        f"  {sample['t_s']:7.0f} s  {sample['rate'] or 0:7,.0f}/s  non-2xx {sample['non2xx']}  "
        f"RSS {sample['rss_bytes'] / 2**20:6.1f} MiB",
        file=sys.stderr,
    )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(engine: str, minutes: float, load: float, r: dict[str, Any]) -> str:
    mib = 2**20
    rows = [
        f"caretask soak on {engine}: {minutes:g} min of the mix at {load:.0%} of its maximum, "
        "server on 1 core",
        f"  maximum mix rate   {r['max_rate']:>9,.0f}/s  ({MAX_RUN_SECONDS} s unpaced)",
        f"  target rate        {r['target_rate']:>9,.0f}/s",
        f"  achieved rate      {r['achieved_rate']:>9,.0f}/s  "
        f"({r['achieved_rate'] / r['target_rate']:.1%} of target; within 5%: "
        f"{_verdict(r['checks']['rate_held'])})",
        f"  requests           {r['requests']:>9,}",
        f"  errors             {r['errors']:>9,}  (non-2xx {r['non2xx']}, socket "
        f"{r['socket_errors']}; goal 0: {_verdict(r['checks']['errors'])})",
        f"  latency p50 / p99  {r['p50_ms']:>6.2f} / {r['p99_ms']:.2f} ms",
        f"  server RSS         {r['rss_start_bytes'] / mib:>7.1f} MiB -> "
        f"{r['rss_end_bytes'] / mib:.1f} MiB  (growth {r['rss_growth']:+.1%}; goal < "
        f"{MAX_RSS_GROWTH:.0%}: {_verdict(r['checks']['rss_growth'])})",
        f"  result             {_verdict(r['passed'])}",
        "",
        f"  {'time s':>7} {'req/s':>8} {'non-2xx':>8} {'RSS MiB':>8}",
    ]
    for s in r["samples"]:
        rate = f"{s['rate']:8,.0f}" if s["rate"] is not None else f"{'':8}"
        rows.append(f"  {s['t_s']:>7.0f} {rate} {s['non2xx']:>8} {s['rss_bytes'] / mib:>8.1f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--load", type=float, default=0.7, help="share of the maximum rate")
    parser.add_argument("--connections", type=int, default=16, help="wrk's -c")
    parser.add_argument("--sample-seconds", type=float, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    require_tool("taskset", "util-linux")
    require_tool("wrk", "Debian: apt install wrk")

    with tempfile.TemporaryDirectory() as tmp, database(args.engine, Path(tmp)) as url:
        workdir = Path(tmp)
        values, _ = load_demo_data(args.tasks, workdir, url)
        driver = Driver(args, workdir, values)
        server = Server(url, workdir, launcher=("taskset", "-c", SERVER_CPU)).start()
        try:
            result = soak(args, driver, server, server.token())
        finally:
            server.stop()

    text = table(args.engine, args.minutes, args.load, result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"soak-{args.engine}.json"
    report = {
        "engine": args.engine,
        "tasks": args.tasks,
        "minutes": args.minutes,
        "load": args.load,
        "connections": args.connections,
        "goals": {"errors": MAX_ERRORS, "rss_growth_below": MAX_RSS_GROWTH},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **result,
        "table": text,
    }
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {target}", file=sys.stderr)
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
