"""A real `caretask serve` process on loopback, and the `caretask` command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.log_scan import remember, remember_sent

CARETASK = shutil.which("caretask", path=str(Path(sys.executable).parent)) or "caretask"
FULL_SCOPE = "system/Task.read system/Task.write"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [CARETASK, *args],
        capture_output=True,
        text=True,
        input=input,
        cwd=cwd,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"caretask {' '.join(args)} failed: {result.stderr}")
    return result


@dataclass
class Server:
    """A `caretask serve` process, running from start() to stop(), or for a `with` block."""

    database: str
    workdir: Path
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    launcher: tuple[str, ...] = ()  # a command that runs the server, e.g. taskset -c 0
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        # the name is what the session-end log scan looks for
        self.log_path = self.workdir / f"server-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed when the process ends)
        self.process = subprocess.Popen(
            [
                *self.launcher,
                CARETASK,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                self.database,
                *self.extra,
            ],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/metadata", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def create_client(self, scope: str = FULL_SCOPE, name: str = "tests") -> dict[str, str]:
        out = run_cli(
            "clients",
            "create",
            name,
            "--scope",
            scope,
            "--database",
            self.database,
            cwd=self.workdir,
        )
        return json.loads(out.stdout)

    def token(self, scope: str = FULL_SCOPE) -> str:
        return self.login(scope)[1]

    def login(self, scope: str = FULL_SCOPE) -> tuple[str, str]:
        """A new client's id and an access token for it."""
        creds = self.create_client(scope)
        response = httpx.post(
            f"{self.url}/auth/token/",
            data={
                "grant_type": "client_credentials",
                "client_id": creds["client_id"],
                "client_secret": creds["client_secret"],
            },
        )
        assert response.status_code == 200, response.text
        remember(creds["client_secret"])
        remember(response.json()["access_token"])
        return creds["client_id"], response.json()["access_token"]

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for the server whose requests the log scan remembers."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=30,
            event_hooks={"request": [remember_sent]},
        )
