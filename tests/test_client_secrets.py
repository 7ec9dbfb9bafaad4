"""Issue 18: `caretask clients list` (every client as a JSON line, never a secret or its
hash) and `caretask clients rotate CLIENT_ID [--grace SECONDS]` (a new secret printed once;
the previous one still taken for the grace period, a day by default), on both engines."""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx

from tests.support.log_scan import remember
from tests.support.server import Server, run_cli


def token_answer(server: Server, client_id: str, secret: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    return httpx.post(f"{server.url}/auth/token/", data=data)


def rotate(server: Server, client_id: str, *extra: str) -> dict[str, str]:
    out = run_cli("clients", "rotate", client_id, *extra, "--database", server.database)
    rotated: dict[str, str] = json.loads(out.stdout)
    remember(rotated["client_secret"])
    return rotated


def test_after_a_rotation_both_secrets_work_during_the_grace_period(server: Server) -> None:
    old = server.create_client()
    remember(old["client_secret"])
    new = rotate(server, old["client_id"])
    assert new["client_id"] == old["client_id"]
    assert new["client_secret"] != old["client_secret"]
    until = datetime.fromisoformat(new["previous_secret_until"]).timestamp()
    assert 86_300 < until - time.time() <= 86_400
    assert token_answer(server, old["client_id"], new["client_secret"]).status_code == 200
    assert token_answer(server, old["client_id"], old["client_secret"]).status_code == 200


def test_without_a_grace_period_the_previous_secret_is_refused_at_once(server: Server) -> None:
    old = server.create_client()
    remember(old["client_secret"])
    new = rotate(server, old["client_id"], "--grace", "0")
    refused = token_answer(server, old["client_id"], old["client_secret"])
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert token_answer(server, old["client_id"], new["client_secret"]).status_code == 200


def test_the_previous_secret_is_refused_once_the_grace_period_is_over(server: Server) -> None:
    old = server.create_client()
    remember(old["client_secret"])
    rotate(server, old["client_id"], "--grace", "3")  # whole seconds: at least 2 left
    assert token_answer(server, old["client_id"], old["client_secret"]).status_code == 200
    time.sleep(3.1)
    assert token_answer(server, old["client_id"], old["client_secret"]).status_code == 401


def test_a_second_rotation_retires_the_first_secret(server: Server) -> None:
    first = server.create_client()
    remember(first["client_secret"])
    rotate(server, first["client_id"])
    rotate(server, first["client_id"])
    assert token_answer(server, first["client_id"], first["client_secret"]).status_code == 401


def test_rotating_an_unknown_or_revoked_client_fails(server: Server) -> None:
    unknown = run_cli("clients", "rotate", "ct_nosuch", "--database", server.database, check=False)
    assert unknown.returncode == 1
    assert unknown.stderr == "caretask: no active confidential client ct_nosuch\n"
    revoked = server.create_client()
    remember(revoked["client_secret"])
    run_cli("clients", "revoke", revoked["client_id"], "--database", server.database)
    refused = run_cli(
        "clients", "rotate", revoked["client_id"], "--database", server.database, check=False
    )
    assert refused.returncode == 1
    assert refused.stdout == ""


def test_a_grace_period_out_of_range_is_a_usage_error(server: Server) -> None:
    result = run_cli(
        "clients", "rotate", "ct_x", "--grace", "-1", "--database", server.database, check=False
    )
    assert result.returncode == 2
    assert result.stderr == "caretask: --grace must be from 0 to 2592000 seconds\n"


def test_clients_list_shows_every_client_and_never_a_secret(server: Server) -> None:
    made = server.create_client(scope="system/Task.read", name="listed one")
    remember(made["client_secret"])
    rotate(server, made["client_id"])
    out = run_cli("clients", "list", "--database", server.database).stdout
    listed = {c["client_id"]: c for c in map(json.loads, out.splitlines())}
    mine = listed[made["client_id"]]
    assert set(mine) == {
        "client_id",
        "name",
        "scope",
        "public",
        "revoked",
        "created",
        "previous_secret_until",
    }
    assert (mine["name"], mine["scope"], mine["public"], mine["revoked"]) == (
        "listed one",
        "system/Task.read",
        False,
        False,
    )
    assert made["client_secret"] not in out
    assert "scrypt$" not in out
