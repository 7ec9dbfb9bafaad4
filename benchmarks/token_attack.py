"""Attacks on the token endpoint, against a fresh `caretask serve` (SQLite):
150 concurrent wrong secrets from one address, the same from 150 addresses, and a lockout
attempt (wrong secrets for a client's id from another address, then the real client). Prints
the statuses, the server's CPU seconds (from /proc) and the wall time of each flood.

    python -m benchmarks.token_attack
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support.server import CARETASK, free_port


def _cpu_seconds(pid: int) -> float:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    ticks = 0
    for process in [pid, *map(int, children)]:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def _flood(url: str, client_id: str, addresses: list[str]) -> list[int]:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"}
    clients = [
        httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=a), timeout=120)
        for a in addresses
    ]
    try:
        answers = await asyncio.gather(*[c.post(f"{url}/auth/token/", data=form) for c in clients])
    finally:
        for client in clients:
            await client.aclose()
    return [answer.status_code for answer in answers]


def _measured(pid: int, url: str, client_id: str, label: str, addresses: list[str]) -> None:
    cpu, started = _cpu_seconds(pid), time.perf_counter()
    statuses = asyncio.run(_flood(url, client_id, addresses))
    wall, cpu = time.perf_counter() - started, _cpu_seconds(pid) - cpu
    print(f"{label}: {dict(Counter(statuses))}, server CPU {cpu:.2f} s, wall {wall:.2f} s")


def _token(url: str, address: str, client_id: str, secret: str) -> int:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport) as client:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        return client.post(f"{url}/auth/token/", data=form).status_code


def main() -> None:
    workdir = Path(tempfile.mkdtemp())
    database = f"sqlite:///{workdir / 'attack.db'}"
    created = subprocess.run(
        [CARETASK, "clients", "create", "victim", "--database", database],
        capture_output=True,
        check=True,
    )
    victim = json.loads(created.stdout)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (workdir / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [CARETASK, "serve", "--port", str(port), "--database", database],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while True:
            try:
                if httpx.get(f"{url}/metadata").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        client_id = victim["client_id"]
        _measured(server.pid, url, client_id, "150 at once from one address", ["127.0.0.1"] * 150)
        attacker = [_token(url, "127.0.0.2", client_id, "guess") for _ in range(6)]
        real = _token(url, "127.0.0.3", client_id, victim["client_secret"])
        print(f"lockout: the attacker at 127.0.0.2 got {attacker}, the client at 127.0.0.3 {real}")
        many = [f"127.0.2.{i}" for i in range(1, 151)]
        _measured(server.pid, url, client_id, "150 at once from 150 addresses", many)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
