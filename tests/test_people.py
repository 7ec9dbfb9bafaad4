"""People: the users command line, and what a person's writes record of them (requester,
note authors, the audit trail), on both engines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from caretask.storage import open_storage
from caretask.storage.urls import DatabaseURL
from tests.support.log_scan import remember
from tests.support.people import create_user, new_username, person_token
from tests.support.seed import seed_task
from tests.support.server import Server, run_cli


def _users(database: str, *args: str, input: str | None = None, check: bool = True) -> Any:
    return run_cli("users", *args, "--database", database, input=input, check=check)


def _stored_user(database: str, username: str) -> Any:
    async def read() -> Any:
        storage = open_storage(DatabaseURL.parse(database))
        try:
            return await storage.get_user(username)
        finally:
            await storage.close()

    return asyncio.run(read())


# --- the command line --------------------------------------------------------------------------


def test_users_create_prints_a_generated_password_once_as_json(fresh_database: str) -> None:
    out = _users(
        fresh_database, "create", "alice", "--practitioner", "Practitioner/p1",
        "--team", "Group/g1", "--team", "Group/g2",
    )  # fmt: skip
    created = json.loads(out.stdout)
    remember(created["password"])
    assert out.stdout.count("\n") == 1
    assert set(created) == {"username", "fhirUser", "teams", "disabled", "password"}
    assert (created["username"], created["fhirUser"], created["teams"]) == (
        "alice",
        "Practitioner/p1",
        ["Group/g1", "Group/g2"],
    )
    assert len(created["password"]) >= 40


def test_a_users_password_is_stored_only_as_a_salted_slow_hash(fresh_database: str) -> None:
    out = _users(fresh_database, "create", "bob", "--practitioner", "Practitioner/p2")
    password = json.loads(out.stdout)["password"]
    remember(password)
    stored = _stored_user(fresh_database, "bob").password_hash
    assert stored.startswith("scrypt$16384$8$1$")
    assert password not in stored


def test_users_create_with_password_stdin_prints_no_password(fresh_database: str) -> None:
    out = _users(
        fresh_database, "create", "carol", "--practitioner", "Practitioner/p3",
        "--password-stdin", input="long enough password\n",
    )  # fmt: skip
    remember("long enough password")
    assert json.loads(out.stdout) == {
        "username": "carol",
        "fhirUser": "Practitioner/p3",
        "teams": [],
        "disabled": False,
    }


def test_users_list_prints_each_user_as_a_json_line_without_its_hash(fresh_database: str) -> None:
    for name in ("zed", "amy"):
        _users(fresh_database, "create", name, "--practitioner", f"Practitioner/{name}")
    _users(fresh_database, "disable", "zed")
    lines = _users(fresh_database, "list").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"username": "amy", "fhirUser": "Practitioner/amy", "teams": [], "disabled": False},
        {"username": "zed", "fhirUser": "Practitioner/zed", "teams": [], "disabled": True},
    ]
    assert "scrypt" not in "".join(lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bad name", "--practitioner", "Practitioner/p"), "is not a username"),
        (("dave", "--practitioner", "Patient/p"), "is not a reference Practitioner/<id>"),
        (("dave", "--practitioner", "Practitioner/a b"), "is not a reference Practitioner/<id>"),
        (("dave", "--practitioner", "Practitioner/p", "--team", "Team/x"), "Group/<id>"),
    ],
    ids=["username", "not-practitioner", "bad-id", "not-group"],
)
def test_users_create_refuses_bad_names_and_references(
    fresh_database: str, args: tuple[str, ...], message: str
) -> None:
    out = _users(fresh_database, "create", *args, check=False)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.startswith("caretask: ") and message in out.stderr


def test_users_create_refuses_a_taken_username(fresh_database: str) -> None:
    _users(fresh_database, "create", "erin", "--practitioner", "Practitioner/e")
    again = _users(
        fresh_database, "create", "erin", "--practitioner", "Practitioner/x", check=False
    )
    assert again.returncode == 1
    assert again.stderr == "caretask: a user erin exists already\n"
    assert again.stdout == ""


def test_users_create_refuses_a_short_password_on_stdin(fresh_database: str) -> None:
    out = _users(
        fresh_database, "create", "fay", "--practitioner", "Practitioner/f", "--password-stdin",
        input="short\n", check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "at least 8 characters" in out.stderr


def test_users_set_password_prints_a_generated_one_once(fresh_database: str) -> None:
    _users(fresh_database, "create", "gus", "--practitioner", "Practitioner/g")
    before = _stored_user(fresh_database, "gus").password_hash
    out = json.loads(_users(fresh_database, "set-password", "gus").stdout)
    remember(out["password"])
    assert set(out) == {"username", "password"}
    assert _stored_user(fresh_database, "gus").password_hash != before


def test_users_disable_of_an_unknown_user_fails(fresh_database: str) -> None:
    out = _users(fresh_database, "disable", "nobody", check=False)
    assert (out.returncode, out.stderr) == (1, "caretask: no enabled user nobody\n")


def test_clients_create_public_needs_a_redirect_uri(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'c.db'}"
    out = run_cli("clients", "create", "app", "--public", "--database", database, check=False)
    assert out.returncode == 2
    assert "needs at least one --redirect-uri" in out.stderr


def test_clients_create_public_refuses_a_system_scope(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'c.db'}"
    out = run_cli(
        "clients", "create", "app", "--public", "--redirect-uri", "https://a.example/cb",
        "--scope", "system/Task.read", "--database", database, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == "caretask: invalid scope: system/Task.read\n"


# --- who did it ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def person(server: Server) -> tuple[str, str]:
    """A person's fhirUser and access token."""
    practitioner = f"Practitioner/{new_username()}"
    user = create_user(server, practitioner=practitioner)
    return practitioner, person_token(server, user["username"])["access_token"]


def _create(server: Server, token: str, body: dict[str, Any]) -> dict[str, Any]:
    with server.client(token) as api:
        answer = api.post("/Task", json=body, headers={"Prefer": "return=representation"})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _ref(task: dict[str, Any], element: str) -> str:
    return str(task[element]["reference"])


def test_a_task_created_by_a_person_without_requester_has_them_as_requester(
    server: Server, person: tuple[str, str]
) -> None:
    practitioner, token = person
    task = _create(server, token, seed_task(requester=None, note=None))
    assert _ref(task, "requester") == practitioner


def test_a_requester_given_by_a_person_is_kept(server: Server, person: tuple[str, str]) -> None:
    task = _create(server, person[1], seed_task(note=None))
    assert _ref(task, "requester") == "Practitioner/5eede137ecfe4124b8b773040e33be14"


def test_a_system_clients_create_without_requester_is_still_refused(
    server: Server, token: str
) -> None:
    with server.client(token) as api:
        assert api.post("/Task", json=seed_task(requester=None)).status_code == 400


def test_a_note_created_by_a_person_without_author_has_them_as_author(
    server: Server, person: tuple[str, str]
) -> None:
    practitioner, token = person
    notes = [{"text": "called the patient"}, {"text": "left a message", "authorString": "Ann"}]
    task = _create(server, token, seed_task(note=notes))
    assert task["note"][0]["authorReference"]["reference"] == practitioner
    assert "authorReference" not in task["note"][1]


def test_an_update_gives_only_the_new_notes_the_person_as_author(
    server: Server, person: tuple[str, str], token: str
) -> None:
    practitioner, person_token_ = person
    with server.client(token) as api:  # a system client's note, without an author
        created = api.post(
            "/Task",
            json=seed_task(note=[{"text": "an old note"}]),
            headers={"Prefer": "return=representation"},
        ).json()
    body = {**created, "note": [*created["note"], {"text": "a new note"}]}
    with server.client(person_token_) as api:
        answer = api.put(
            f"/Task/{created['id']}", json=body, headers={"Prefer": "return=representation"}
        )
    assert answer.status_code == 200, answer.text
    notes = {n["text"]: n for n in answer.json()["note"]}
    assert "authorReference" not in notes["an old note"]
    assert notes["a new note"]["authorReference"]["reference"] == practitioner


def test_a_patch_that_adds_a_note_gives_it_the_person_as_author(
    server: Server, person: tuple[str, str]
) -> None:
    practitioner, token = person
    task = _create(server, token, seed_task(note=None))
    change = [{"op": "add", "path": "/note", "value": [{"text": "patched in"}]}]
    with server.client(token) as api:
        answer = api.patch(
            f"/Task/{task['id']}",
            json=change,
            headers={
                "Content-Type": "application/json-patch+json",
                "Prefer": "return=representation",
            },
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["note"][0]["authorReference"]["reference"] == practitioner


def test_a_transaction_by_a_person_records_them_as_requester_and_author(
    server: Server, person: tuple[str, str]
) -> None:
    practitioner, token = person
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0c3f9a4e-0000-4000-8000-000000000001",
                "resource": seed_task(requester=None, note=[{"text": "from a bundle"}]),
                "request": {"method": "POST", "url": "Task"},
            }
        ],
    }
    with server.client(token) as api:
        answer = api.post("/", json=bundle)
        assert answer.status_code == 200, answer.text
        location = answer.json()["entry"][0]["response"]["location"]
        task_id = location.split("/_history")[0].rsplit("/", 1)[1]
        task = api.get(f"/Task/{task_id}").json()
    assert _ref(task, "requester") == practitioner
    assert task["note"][0]["authorReference"]["reference"] == practitioner


def test_the_audit_trail_records_the_person_and_the_app(
    make_server,
    fresh_database: str,  # type: ignore[no-untyped-def]
) -> None:
    server = make_server(database=fresh_database, env={"CARETASK_AUDIT_FLUSH_SECONDS": "0.05"})
    user = create_user(server, practitioner="Practitioner/audited")
    token = person_token(server, user["username"])["access_token"]
    with server.client(token) as api:
        assert api.get("/Task", params={"_count": "1"}).status_code == 200
    server.stop()  # a graceful shutdown stores every pending record
    out = run_cli("audit", "--format", "fhir", "--database", fresh_database).stdout
    events = [json.loads(line) for line in out.splitlines()]
    search = next(e for e in events if e.get("subtype", [{}])[0].get("code") == "search-type")
    assert search["agent"][0] == {
        "altId": user["username"],
        "requestor": True,
        "who": {"reference": "Practitioner/audited"},
        "network": {"address": "127.0.0.1", "type": "2"},
    }
    assert search["agent"][1] == {
        "requestor": False,
        "who": {"identifier": {"system": "urn:caretask:client-id", "value": "caretask-board"}},
    }
    text = run_cli("audit", "--database", fresh_database).stdout.splitlines()
    logins = [line.split("\t") for line in text if "\tlogin\t" in line and "\t303" in line]
    assert logins[0][1] == f"caretask-board {user['username']} Practitioner/audited"
    mine = run_cli("audit", "--user", user["username"], "--database", fresh_database).stdout
    assert mine and all(
        line.split("\t")[1].split(" ")[1] == user["username"] for line in mine.splitlines()
    )
