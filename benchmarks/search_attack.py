"""Huge-search attacks against a real `caretask serve` holding demo
tasks, with a read-only client: each attack once, then four at a time for a few seconds
while another client times /readyz and an ordinary search. Prints a table of statuses,
times and the server's RSS, and writes benchmarks/results/search-attack-<engine>.json.

    python -m benchmarks.search_attack --engine sqlite|postgresql [--tasks 50000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from benchmarks.http import HERE, database, load_demo_data
from benchmarks.soak import rss_bytes
from tests.support.server import Server

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _dates(i: int, n: int) -> str:
    return ",".join(f"ap20{10 + (i + j) % 15}-0{1 + j % 9}-1{j % 10}" for j in range(n))


def _pairs(i: int, n: int) -> str:
    return ",".join(LETTERS[(i + j) % 26] + LETTERS[(7 * j + i) % 26] for j in range(n))


# the three (past the bounds now), and the slowest searches inside the bounds
ATTACKS: dict[str, list[tuple[str, str]]] = {
    "_lastUpdated 24x100": [("_lastUpdated", _dates(i, 100)) for i in range(24)],
    "authored-on 64x100": [("authored-on", _dates(i, 100)) for i in range(64)],
    "label:contains 64x100": [("label:contains", _pairs(i, 100)) for i in range(64)],
    "label:contains 16x8 misses": [
        ("label:contains", ",".join(f"q{c}{k}" for k in range(8))) for c in LETTERS[:16]
    ],
    "label:contains 2x64": [("label:contains", _pairs(i, 64)) for i in range(2)],
}
ORDINARY = {"status": "requested", "_count": "5"}
PROBES = (("readyz", "/readyz", {}), ("search", "/Task", ORDINARY))


def _search(client: httpx.Client, pairs: list[tuple[str, str]]) -> tuple[int, float]:
    started = time.perf_counter()
    answer = client.post("/Task/_search", content=urlencode(pairs), headers=FORM)
    return answer.status_code, time.perf_counter() - started


def _four_at_once(
    server: Server, token: str, pairs: list[tuple[str, str]], seconds: float
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    stop = time.monotonic() + seconds
    attacks: list[tuple[int, float]] = []
    probes: dict[str, list[tuple[int, float]]] = {"readyz": [], "search": []}

    def attacker() -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
            while time.monotonic() < stop:
                attacks.append(_search(client, pairs))

    def prober() -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
            while time.monotonic() < stop:
                for name, path, params in (
                    ("readyz", "/readyz", {}),
                    ("search", "/Task", ORDINARY),
                ):
                    started = time.perf_counter()
                    status = client.get(path, params=params).status_code
                    probes[name].append((status, time.perf_counter() - started))
                time.sleep(0.1)

    threads = [threading.Thread(target=attacker) for _ in range(4)]
    threads.append(threading.Thread(target=prober))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def summary(samples: list[tuple[int, float]]) -> dict[str, Any]:
        times = [s[1] for s in samples]
        return {
            "count": len(samples),
            "statuses": sorted({s[0] for s in samples}),
            "median_s": statistics.median(times),
            "max_s": max(times),
        }

    return {
        "attacks": summary(attacks),
        **{name: summary(samples) for name, samples in probes.items()},
        "rss_mib": rss_bytes(server.process.pid) / 2**20,  # type: ignore[union-attr]
    }


def _table(engine: str, tasks: int, results: dict[str, Any]) -> str:
    lines = [
        f"huge searches on {engine}, {tasks:,} tasks, read-only client; four at once for "
        f"{results['seconds']:g} s with /readyz and an ordinary search timed meanwhile",
        f"{'attack':28} {'alone':>12} {'4x status':>10} {'4x max s':>9} "
        f"{'readyz max ms':>14} {'search max ms':>14} {'RSS MiB':>8}",
    ]
    for name, r in results["attacks"].items():
        four = r["four_at_once"]
        lines.append(
            f"{name:28} {r['alone_status']:>4} {r['alone_s'] * 1000:>5.0f} ms "
            f"{','.join(map(str, four['attacks']['statuses'])):>10} "
            f"{four['attacks']['max_s']:>9.2f} {four['readyz']['max_s'] * 1000:>14.0f} "
            f"{four['search']['max_s'] * 1000:>14.0f} {four['rss_mib']:>8.1f}"
        )
    lines.append(
        f"server RSS: {results['rss_idle_mib']:.1f} MiB idle, "
        f"{results['rss_end_mib']:.1f} MiB at the end"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=6, help="of each four-at-once run")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, database(args.engine, Path(tmp)) as url:
        workdir = Path(tmp)
        load_demo_data(args.tasks, workdir, url)
        server = Server(url, workdir).start()
        try:
            token = server.token("system/Task.read")
            pid = server.process.pid  # type: ignore[union-attr]
            results: dict[str, Any] = {
                "seconds": args.seconds,
                "rss_idle_mib": rss_bytes(pid) / 2**20,
                "attacks": {},
            }
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
                for name, pairs in ATTACKS.items():
                    status, seconds = _search(client, pairs)
                    results["attacks"][name] = {"alone_status": status, "alone_s": seconds}
            for name, pairs in ATTACKS.items():
                print(f"four at once: {name}...", file=sys.stderr)
                four = _four_at_once(server, token, pairs, args.seconds)
                results["attacks"][name]["four_at_once"] = four
            results["rss_end_mib"] = rss_bytes(pid) / 2**20
        finally:
            server.stop()

    text = _table(args.engine, args.tasks, results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"search-attack-{args.engine}.json"
    target.write_text(
        json.dumps({"engine": args.engine, "tasks": args.tasks, **results, "table": text}, indent=2)
        + "\n"
    )
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
