"""Head flood: endless URLs, header lines and chunked-body framing against a real server.

    python -m benchmarks.head_flood [--megabytes 100] [--connections 1 4] [--kinds url ...]

For each number of connections and each kind of flood, every connection offers --megabytes
of it as fast as the server takes it, with no token: an endless URL or header line, and
after a chunked body's head an endless trailer line (to the token endpoint, which waits for
the body, and to a search answered 401 before its body), endless small trailer lines, or an
endless chunk extension. Reports the bytes the server accepted (sent before it closed the
connection; answers are read and ignored), the server's RSS before, at its peak while the
connections were open, and after, and the latency of GET /healthz on another connection
meanwhile.
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

from tests.support.server import Server

CHUNK = b"a" * 65536
_CHUNKED = b"Host: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
_CHUNKED += b"Transfer-Encoding: chunked\r\n\r\n"
_TOKEN = b"POST /auth/token HTTP/1.1\r\n" + _CHUNKED + b"1d\r\ngrant_type=client_credentials\r\n"
_SEARCH = b"POST /Task/_search HTTP/1.1\r\n" + _CHUNKED + b"5\r\n_id=x\r\n"
# kind: (what a connection sends first, what it sends again and again)
FLOODS = {
    "url": (b"GET /Task?description=", CHUNK),
    "header": (b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ", CHUNK),
    "trailer": (_TOKEN + b"0\r\nX-Endless: ", CHUNK),
    "trailer401": (_SEARCH + b"0\r\nX-Endless: ", CHUNK),
    "trailers": (_SEARCH + b"0\r\n", b"X-A: b\r\n" * 8192),
    "extension": (_TOKEN + b"5;ext=", CHUNK),
}


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def offer(port: int, flood: tuple[bytes, bytes], total: int, accepted: list[int]) -> None:
    """Send the flood's head and then its filler until `total` bytes or the server closes."""
    head, filler = flood
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head)
            sent = len(head)
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    if not sock.recv(65536):
                        break
                    continue
                sock.sendall(filler)
                sent += len(filler)
        accepted.append(sent)


def run(srv: Server, kind: str, connections: int, total: int) -> dict[str, float]:
    assert srv.process is not None
    pid = srv.process.pid
    before = rss_mib(pid)
    peak = before
    accepted: list[int] = []
    threads = [
        threading.Thread(target=offer, args=(srv.port, FLOODS[kind], total, accepted))
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
    parser.add_argument("--kinds", nargs="+", choices=list(FLOODS), default=list(FLOODS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(f"sqlite:///{tmp}/caretask.db", Path(tmp)).start()
        try:
            print(
                "flood       conns  offered  accepted KiB  seconds  RSS MiB before/peak/after"
                "  /healthz p50/max ms"
            )
            for connections in args.connections:
                for kind in args.kinds:
                    r = run(srv, kind, connections, args.megabytes * 1024 * 1024)
                    print(
                        f"{kind:11} {connections:5}  {args.megabytes:4} MB  "
                        f"{r['accepted_kib']:12,.0f}  {r['seconds']:7.2f}  "
                        f"{r['rss_before']:6.1f} / {r['rss_peak']:6.1f} / {r['rss_after']:6.1f}"
                        f"  {r['healthz_p50']:6.2f} / {r['healthz_max']:6.2f}"
                    )
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
