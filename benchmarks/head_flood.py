"""Head flood: endless URLs and header lines against a real server (issue 12 item 2).

    python -m benchmarks.head_flood [--megabytes 100] [--connections 1 4]

For each number of connections and each kind of head (an endless URL, an endless header
line), every connection offers --megabytes of it as fast as the server takes it, with no
token. Reports the bytes the server accepted (sent before it answered or closed), the
server's RSS before, at its peak while the connections were open, and after, and the
latency of GET /healthz on another connection meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import Server

HEADS = {
    "url": b"GET /Task?description=",
    "header": b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ",
}
CHUNK = b"a" * 65536


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def offer(port: int, head: bytes, total: int, accepted: list[int]) -> None:
    """Send `head` and then filler until `total` bytes or the server answers or closes."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head)
            sent = len(head)
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(CHUNK)
                sent += len(CHUNK)
        accepted.append(sent)


def run(srv: Server, kind: str, connections: int, total: int) -> dict[str, float]:
    assert srv.process is not None
    pid = srv.process.pid
    before = rss_mib(pid)
    peak = before
    accepted: list[int] = []
    threads = [
        threading.Thread(target=offer, args=(srv.port, HEADS[kind], total, accepted))
        for _ in range(connections)
    ]
    latencies = []
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        while any(t.is_alive() for t in threads) or not latencies:
            t0 = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append((time.perf_counter() - t0) * 1000)
            peak = max(peak, rss_mib(pid))
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    time.sleep(1)
    return {
        "accepted_kib": sum(accepted) / 1024,
        "seconds": elapsed,
        "rss_before": before,
        "rss_peak": peak,
        "rss_after": rss_mib(pid),
        "healthz_p50": statistics.median(latencies),
        "healthz_max": max(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(f"sqlite:///{tmp}/caretask.db", Path(tmp)).start()
        try:
            print(
                "head    conns  offered  accepted KiB  seconds  RSS MiB before/peak/after"
                "  /healthz p50/max ms"
            )
            for connections in args.connections:
                for kind in HEADS:
                    r = run(srv, kind, connections, args.megabytes * 1024 * 1024)
                    print(
                        f"{kind:7} {connections:5}  {args.megabytes:4} MB  "
                        f"{r['accepted_kib']:12,.0f}  {r['seconds']:7.2f}  "
                        f"{r['rss_before']:6.1f} / {r['rss_peak']:6.1f} / {r['rss_after']:6.1f}"
                        f"  {r['healthz_p50']:6.2f} / {r['healthz_max']:6.2f}"
                    )
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
