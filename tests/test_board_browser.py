"""The task board in a real browser: Playwright driving Debian's Chromium against a real
`caretask serve`, people signed in through the sign-in page as the board does it.

One server and one browser for the module; each test gets its own browser contexts (a
context is a fresh profile: its own sessionStorage) and its own team, so that tests do not
see each other's tasks. Every page's console errors and uncaught exceptions fail the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.log_scan import remember
from tests.support.server import CARETASK, Server

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

GROUP = "http://schemas.canvasmedical.com/fhir/extensions/task-group"
PASSWORD = "correct horse battery staple 42"
LIVE_SECONDS = 2.0  # the bound: another person's change shows within it


# --- the server, the browser, people and tasks ------------------------------------------------


@pytest.fixture(scope="module")
def board_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("board")
    with Server(database_url("sqlite", workdir), workdir) as server:
        yield server


@pytest.fixture(scope="module")
def system(board_server: Server) -> Iterator[httpx.Client]:
    token = board_server.token("system/Task.* system/Subscription.*")
    with board_server.client(token) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield launched
        launched.close()


class Console:
    """Errors a page logged or threw, collected from every page of a context."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []

    def watch(self, page: Any) -> None:
        page.on("console", lambda m: self._add(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self._add(f"uncaught: {e}"))

    def _add(self, text: str) -> None:
        if not any(p.search(text) for p in self.expected):
            self.errors.append(text)


@pytest.fixture
def contexts(browser: Any) -> Iterator[Any]:
    """Make browser contexts (each with its console watched); all closed and checked after."""
    made: list[tuple[Any, Console]] = []

    def make(**options: Any) -> tuple[Any, Console]:
        context = browser.new_context(**options)
        console = Console()
        context.on("page", console.watch)
        made.append((context, console))
        return context, console

    yield make
    errors = [e for _, console in made for e in console.errors]
    for context, _ in made:
        context.close()
    assert not errors, f"console errors: {errors}"


def create_user(server: Server, name: str, practitioner: str, teams: list[str]) -> None:
    team_args = [arg for team in teams for arg in ("--team", team)]
    result = subprocess.run(
        [
            *(CARETASK, "users", "create", name, "--practitioner", practitioner),
            *team_args,
            *("--password-stdin", "--database", server.database),
        ],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=server.workdir,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    remember(PASSWORD)


class Person:
    def __init__(self, server: Server, teams: int = 1) -> None:
        self.name = f"user{uuid.uuid4().hex[:8]}"
        self.practitioner = f"Practitioner/{uuid.uuid4().hex}"
        self.teams = [f"Group/{uuid.uuid4()}" for _ in range(teams)]
        create_user(server, self.name, self.practitioner, self.teams)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_task(
    system: httpx.Client,
    description: str,
    *,
    owner: str | None = None,
    team: str | None = None,
    due: datetime | None = None,
    status: str = "requested",
    labels: tuple[str, ...] = (),
) -> str:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "intent": "unknown",
        "description": description,
        "requester": {"reference": "Practitioner/requester1"},
        "for": {"reference": f"Patient/{uuid.uuid4().hex}"},
    }
    if owner:
        task["owner"] = {"reference": owner}
    if team:
        task["extension"] = [{"url": GROUP, "valueReference": {"reference": team}}]
    if due:
        task["restriction"] = {"period": {"end": iso(due)}}
    if labels:
        task["input"] = [{"type": {"text": "label"}, "valueString": label} for label in labels]
    answer = system.post("/Task", json=task)
    assert answer.status_code == 201, answer.text
    return answer.headers["Location"].rsplit("/", 1)[1]


def read_task(system: httpx.Client, task_id: str) -> dict[str, Any]:
    answer = system.get(f"/Task/{task_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def sign_in(context: Any, server: Server, person: Person, path: str = "/app/") -> Any:
    """Open the board, sign in on the server's sign-in page, land back on the board."""
    page = context.new_page()
    page.goto(f"{server.url}{path}")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/auth/authorize"))
    page.get_by_label("Username").fill(person.name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    page.wait_for_url(re.compile(re.escape(server.url + path.split("?")[0])))
    loaded(page)
    return page


def loaded(page: Any) -> None:
    page.wait_for_selector("body[data-loaded='true']", timeout=15_000)


def board(page: Any, server: Server, view: str, **filters: str) -> None:
    query = "&".join(f"{k}={v}" for k, v in {"view": view, **filters}.items())
    page.goto(f"{server.url}/app/?{query}")
    loaded(page)


def rows(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#tasks tbody th a").all_inner_texts()]


def live(page: Any) -> None:
    """Wait until the page's websocket is bound: changes from now on reach it."""
    page.wait_for_selector("body[data-live='on']", timeout=10_000)


# --- pages without a session ---------------------------------------------------------------


def test_a_page_without_a_session_offers_sign_in_under_a_strict_policy(
    board_server: Server, contexts: Any
) -> None:
    context, console = contexts()
    page = context.new_page()
    answer = page.goto(f"{board_server.url}/app/")
    headers = answer.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    expect(page.get_by_role("heading", name="Sign in to the task board")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    # every static file is versioned and cached for a year
    script = page.locator("script[type=module]").get_attribute("src")
    static = httpx.get(f"{board_server.url}{script}")
    assert static.status_code == 200
    assert "immutable" in static.headers["cache-control"]
    assert static.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{board_server.url}/app/static/0000/js/main.js").status_code == 404
    assert httpx.get(f"{board_server.url}/app/tasks/not an id").status_code == 404
    assert httpx.head(f"{board_server.url}/app/").status_code == 200
    options = httpx.options(f"{board_server.url}/app/")
    assert (options.status_code, options.headers["allow"]) == (204, "GET, HEAD, OPTIONS")
    assert httpx.post(f"{board_server.url}/app/").status_code == 405
    bare = httpx.get(f"{board_server.url}/app")
    assert bare.is_redirect and bare.headers["location"].endswith("/app/")
    console.expected.append(re.compile("status of 404"))  # the not-found page's own
    missing = page.goto(f"{board_server.url}/app/no-such-page")
    assert missing.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()


def test_the_board_is_no_part_of_the_api_documents(board_server: Server) -> None:
    openapi = httpx.get(f"{board_server.url}/openapi.json").json()
    assert not [p for p in openapi["paths"] if p.startswith("/app")]


# --- signed in ---------------------------------------------------------------------------------


def test_sign_in_and_each_view_shows_its_tasks(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    other = f"Practitioner/{uuid.uuid4().hex}"
    other_team = f"Group/{uuid.uuid4()}"
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:6]  # this test's tasks, among every test's
    mine = make_task(system, f"mine {tag}", owner=me.practitioner, team=me.teams[0],
                     due=now + timedelta(days=3), labels=(f"lab{tag}",))  # fmt: skip
    make_task(system, f"mine plain {tag}", owner=me.practitioner, due=now + timedelta(days=5))
    make_task(system, f"mine done {tag}", owner=me.practitioner, status="completed")
    make_task(system, f"queue {tag}", team=me.teams[0], due=now + timedelta(days=1))
    make_task(system, f"claimed in queue {tag}", team=me.teams[0], owner=other)
    make_task(system, f"other queue {tag}", team=other_team)
    make_task(system, f"late {tag}", owner=other, due=now - timedelta(days=2))
    context, _ = contexts()
    page = sign_in(context, board_server, me)
    expect(page.get_by_text(f"Signed in as {me.name}")).to_be_visible()

    def shown(view: str, **filters: str) -> set[str]:
        board(page, board_server, view, **filters)
        return {r for r in rows(page) if r.endswith(tag)}

    assert shown("mine") == {f"mine {tag}", f"mine plain {tag}"}
    assert shown("team") == {f"queue {tag}"}
    assert shown("unassigned") == {f"queue {tag}", f"other queue {tag}"}
    assert f"late {tag}" in shown("overdue")
    assert f"mine {tag}" not in shown("overdue")
    assert shown("mine", label=f"lab{tag}") == {f"mine {tag}"}
    assert shown("mine", status="completed") == {f"mine done {tag}"}
    # sorted by due date: the sooner first
    board(page, board_server, "mine")
    assert [r for r in rows(page) if r.endswith(tag)] == [f"mine {tag}", f"mine plain {tag}"]
    # the filter form, by its labels
    page.get_by_label("Label").fill(f"lab{tag}")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#tasks tbody th a")).to_have_text([f"mine {tag}"])
    page.get_by_role("link", name=f"mine {tag}").click()
    loaded(page)
    expect(page.get_by_role("heading", name=f"mine {tag}")).to_be_visible()
    assert page.url.endswith(f"/app/tasks/{mine}")
    # signing out forgets the session and deletes the tab's live-update Subscription
    live(page)
    subscription = page.evaluate(
        "JSON.parse(sessionStorage.getItem('caretask.session')).subscriptionId"
    )
    assert system.get(f"/Subscription/{subscription}").status_code == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to the task board")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('caretask.session')") is None
    assert system.get(f"/Subscription/{subscription}").status_code == 404


def test_claim_next_add_a_note_and_complete(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    now = datetime.now(UTC)
    later = make_task(
        system, "Fax the referral letter", team=me.teams[0], due=now + timedelta(days=9)
    )
    first = make_task(
        system, "Call about lab results", team=me.teams[0], due=now + timedelta(days=1)
    )
    context, console = contexts()
    page = sign_in(context, board_server, me, "/app/?view=team")
    expect(page.locator("#tasks tbody th a")).to_have_text(
        ["Call about lab results", "Fax the referral letter"]
    )
    page.get_by_role("button", name="Claim next task").click()
    page.wait_for_url(re.compile(f"/app/tasks/{first}$"))
    loaded(page)
    expect(page.locator("#t-owner")).to_have_text("You")
    remember("Left a voicemail, will call again")
    page.get_by_label("Add a note").fill("Left a voicemail, will call again")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator("#notes")).to_contain_text("Left a voicemail, will call again")
    expect(page.locator("#notices")).to_contain_text("Note added")
    page.get_by_role("button", name="Complete").click()
    expect(page.locator("#t-status")).to_have_text("Completed")
    expect(page.locator("#history")).to_contain_text("Status Requested → Completed")
    expect(page.locator("#history")).to_contain_text("Note added by You")
    stored = read_task(system, first)
    assert stored["status"] == "completed"
    assert stored["owner"]["reference"] == me.practitioner
    assert stored["note"][-1]["text"] == "Left a voicemail, will call again"
    assert read_task(system, later).get("owner") is None
    # the queue now holds only the other task; once it is taken, claim next says so
    board(page, board_server, "team")
    assert rows(page) == ["Fax the referral letter"]
    page.get_by_role("button", name="Claim next task").click()
    page.wait_for_url(re.compile(f"/app/tasks/{later}$"))
    loaded(page)
    board(page, board_server, "team")
    console.expected.append(re.compile("status of 404"))  # $claim-next's "none left"
    page.get_by_role("button", name="Claim next task").click()
    expect(page.locator("#notices")).to_contain_text("Nothing left to claim")


def test_another_persons_change_shows_within_two_seconds(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    alice = Person(board_server)
    bob = Person(board_server)
    tag = uuid.uuid4().hex[:6]
    task_id = make_task(system, f"Verify insurance {tag}", labels=(f"live{tag}",))
    first, _ = contexts()
    second, _ = contexts()
    watcher = sign_in(second, board_server, bob, f"/app/?view=unassigned&label=live{tag}")
    expect(watcher.locator("#tasks tbody th a")).to_have_text([f"Verify insurance {tag}"])
    live(watcher)
    actor = sign_in(first, board_server, alice, f"/app/tasks/{task_id}")
    actor.get_by_role("button", name="Claim", exact=True).click()
    expect(actor.locator("#t-owner")).to_have_text("You")
    started = time.monotonic()
    expect(watcher.locator("#tasks tbody th a")).to_have_count(0, timeout=LIVE_SECONDS * 1000)
    expect(watcher.locator("#notices")).to_contain_text("changed by someone else")
    assert time.monotonic() - started < LIVE_SECONDS
    # the same on a task's page: another person's note appears without a reload
    live(actor)
    watcher.goto(f"{board_server.url}/app/tasks/{task_id}")
    loaded(watcher)
    live(watcher)
    remember(f"Insurance verified {tag}")
    actor.get_by_label("Add a note").fill(f"Insurance verified {tag}")
    actor.get_by_role("button", name="Add note").click()
    expect(watcher.locator("#notes")).to_contain_text(
        f"Insurance verified {tag}", timeout=LIVE_SECONDS * 1000
    )
    expect(watcher.locator("#notices")).to_contain_text("changed by someone else")
    # the page that made the change does not call it someone else's
    expect(actor.locator("#notices")).to_contain_text("Note added")


def tab_to(page: Any, name: str, limit: int = 80) -> None:
    """Press Tab until the focused element's accessible text is `name`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement;"
            " return (e.getAttribute('aria-label') || e.innerText || e.value || '').trim(); }"
        )
        if focused == name:
            return
    raise AssertionError(f"Tab never reached {name!r}")


def test_claim_and_complete_with_the_keyboard_alone(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    task_id = make_task(system, "Schedule the follow-up visit", team=me.teams[0])
    context, _ = contexts()
    page = sign_in(context, board_server, me, "/app/?view=team")
    page.goto(f"{board_server.url}/app/?view=team")  # focus from the top of a fresh page
    loaded(page)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")
    tab_to(page, "Claim next task")
    # the focus is visible: an outline drawn around the focused control
    outline = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"
    )
    assert outline[0] != "none" and outline[1] >= 2
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(f"/app/tasks/{task_id}$"))
    loaded(page)
    expect(page.locator("#t-owner")).to_have_text("You")
    tab_to(page, "Complete")
    page.keyboard.press("Space")
    expect(page.locator("#t-status")).to_have_text("Completed")
    assert read_task(system, task_id)["status"] == "completed"
    # Complete is hidden now: the focus went on (to the notice), not back to the page
    assert page.evaluate("document.activeElement !== document.body")
    assert page.evaluate("document.activeElement.offsetParent !== null")


def test_a_phone_sized_window_needs_no_sideways_scrolling(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    task_id = make_task(system, "Send the care plan " + "x" * 60, owner=me.practitioner)
    context, _ = contexts(viewport={"width": 375, "height": 740})
    page = sign_in(context, board_server, me)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.goto(f"{board_server.url}/app/tasks/{task_id}")
    loaded(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_create_a_task_and_change_it(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    context, _ = contexts()
    page = sign_in(context, board_server, me, "/app/new")
    remember("Order a wheelchair")
    page.get_by_label("Description").fill("Order a wheelchair")
    page.get_by_label("Patient").fill("Patient/p-wheel")
    page.get_by_label("Labels").fill("DME, Urgent")
    page.get_by_label("Assign to me").check()
    page.get_by_role("button", name="Create task").click()
    page.wait_for_url(re.compile(r"/app/tasks/[0-9a-f-]+$"))
    loaded(page)
    task_id = page.url.rsplit("/", 1)[1]
    stored = read_task(system, task_id)
    assert stored["owner"]["reference"] == me.practitioner
    assert stored["requester"]["reference"] == me.practitioner
    assert stored["extension"][0]["valueReference"]["reference"] == me.teams[0]
    page.get_by_role("button", name="Remove label Urgent").click()
    expect(page.locator("#t-labels")).not_to_contain_text("Urgent")
    page.get_by_label("Add a label").fill("Follow-up")
    page.get_by_role("button", name="Add label").click()
    expect(page.locator("#t-labels")).to_contain_text("Follow-up")
    page.get_by_label("Due date").fill("2031-05-06")
    page.get_by_role("button", name="Change due date").click()
    expect(page.locator("#t-due")).to_contain_text("2031")
    page.get_by_label("Reassign to").fill("Practitioner/colleague7")
    page.get_by_role("button", name="Reassign").click()
    expect(page.locator("#t-owner")).to_have_text("Practitioner/colleague7")
    stored = read_task(system, task_id)
    labels = [i["valueString"] for i in stored["input"]]
    assert labels == ["DME", "Follow-up"]
    assert stored["restriction"]["period"]["end"].startswith("2031-05-0")
    assert stored["owner"]["reference"] == "Practitioner/colleague7"
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator("#t-status")).to_have_text("Cancelled")


def test_a_change_made_meanwhile_is_shown_not_overwritten(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    task_id = make_task(system, "Review the imaging report", owner=me.practitioner)
    context, console = contexts()
    page = sign_in(context, board_server, me, f"/app/tasks/{task_id}")
    # the page's live updates are off (no websocket), so it holds version 1 when it writes
    console.expected.append(re.compile("ERR_FAILED|status of 412"))
    page.route("**/Subscription**", lambda route: route.abort())
    page.reload()
    loaded(page)
    answer = system.patch(
        f"/Task/{task_id}",
        content=b'[{"op": "replace", "path": "/description", "value": "Review the CT report"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert answer.status_code == 200
    page.get_by_role("button", name="Complete").click()
    expect(page.locator("#alerts")).to_contain_text("Someone else changed this task")
    expect(page.get_by_role("heading", name="Review the CT report")).to_be_visible()
    assert read_task(system, task_id)["status"] == "requested"


def refusing(status: int) -> Any:
    """A route handler that answers `status` with an OperationOutcome."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}

    def handle(route: Any) -> None:
        route.fulfill(status=status, json=outcome)

    return handle


def test_failures_read_as_plain_sentences(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    context, console = contexts()
    page = sign_in(context, board_server, me)
    # the network is gone
    console.expected.append(re.compile("ERR_INTERNET_DISCONNECTED|Failed to fetch|net::"))
    context.set_offline(True)
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#alerts")).to_contain_text("could not be reached")
    context.set_offline(False)
    page.get_by_role("button", name="Try again").click()
    expect(page.locator("#alerts")).to_be_empty()
    # the server refuses, or fails: a sentence for each (the answers made up in the browser)
    console.expected.append(re.compile("status of (403|500|503)"))
    for status, said in (
        (403, "not allowed to do that"),
        (500, "Something went wrong on the server (error 500)"),
        (503, "The server is busy right now"),
    ):
        page.route("**/Task?**", refusing(status))
        page.get_by_role("button", name="Apply filters").click()
        expect(page.locator("#alerts")).to_contain_text(said)
        page.unroute("**/Task?**")
    page.get_by_role("button", name="Try again").click()
    expect(page.locator("#alerts")).to_be_empty()
    # the access token is no longer accepted: the refresh token gets a new one, unnoticed
    console.expected.append(re.compile("status of (401|400)"))
    page.evaluate(
        "() => { const s = JSON.parse(sessionStorage.getItem('caretask.session'));"
        " s.accessToken = 'expired';"
        " sessionStorage.setItem('caretask.session', JSON.stringify(s)); }"
    )
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#tasks")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#alerts")).to_be_empty()
    renewed = page.evaluate("JSON.parse(sessionStorage.getItem('caretask.session')).accessToken")
    assert renewed != "expired"
    # the token is no longer accepted and cannot be refreshed: the session ended
    page.evaluate(
        "() => { const s = JSON.parse(sessionStorage.getItem('caretask.session'));"
        " s.accessToken = 'expired'; s.refreshToken = 'revoked';"
        " sessionStorage.setItem('caretask.session', JSON.stringify(s)); }"
    )
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#alerts")).to_contain_text("Your session ended")
    expect(page.get_by_role("button", name="Sign in again")).to_be_visible()
    # an unknown task
    console.expected.append(re.compile("status of 404"))
    page = sign_in(context, board_server, me, f"/app/tasks/{uuid.uuid4()}")
    expect(page.locator("#alerts")).to_contain_text("does not exist")
    for text in page.locator("body").all_inner_texts():
        assert "Traceback" not in text and "Error:" not in text


def test_the_sign_in_page_refuses_a_wrong_password_and_a_foreign_redirect(
    board_server: Server, contexts: Any
) -> None:
    me = Person(board_server)
    context, console = contexts()
    console.expected.append(re.compile("status of (400|401|403)"))
    page = context.new_page()
    page.goto(f"{board_server.url}/app/")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/auth/authorize"))
    page.get_by_label("Username").fill(me.name)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    page.wait_for_load_state()
    assert "/auth/authorize" in page.url
    assert "code=" not in page.url
    expect(page.get_by_label("Password")).to_be_visible()
    # a redirect URI that is not the board's exactly is refused, not followed
    foreign = httpx.URL(
        f"{board_server.url}/auth/authorize",
        params={
            "response_type": "code",
            "client_id": "caretask-board",
            "redirect_uri": "http://evil.example/app/callback",
            "scope": "user/Task.*",
            "state": "s1",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
    )
    page.goto(str(foreign))
    assert page.url.startswith(board_server.url)
    expect(page.get_by_label("Password")).to_have_count(0)


UNLABELLED = """() => [
    ...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter((e) => e.offsetParent !== null)
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                 && !(e.textContent || '').trim())
  .map((e) => e.outerHTML.slice(0, 80))"""


def test_pages_follow_the_bundle_links_and_every_control_is_labelled(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    now = datetime.now(UTC)
    for n in range(27):
        make_task(system, f"Outreach call {n:02d}", team=me.teams[0], due=now + timedelta(hours=n))
    context, _ = contexts()
    page = sign_in(context, board_server, me, "/app/?view=team")
    expect(page.locator("#tasks tbody tr")).to_have_count(25)
    expect(page.locator("#summary")).to_have_text("Showing 1\u201325 of 27 tasks.")
    assert rows(page)[0] == "Outreach call 00"
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#tasks tbody th a")).to_have_text(["Outreach call 25", "Outreach call 26"])
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    assert "offset=25" in page.url
    page.get_by_role("button", name="Previous page").click()
    expect(page.locator("#tasks tbody tr")).to_have_count(25)
    # landmarks, and a name for every visible control, on each page
    for path in ("/app/?view=team", "/app/new", f"/app/tasks/{page_task(page)}"):
        page.goto(f"{board_server.url}{path}")
        loaded(page)
        assert page.evaluate(UNLABELLED) == [], path
        for role in ("banner", "main", "navigation"):
            expect(page.get_by_role(role).first).to_be_attached()


def page_task(page: Any) -> str:
    href: str = page.locator("#tasks tbody th a").first.get_attribute("href")
    return href.rsplit("/", 1)[1]


SESSION = "JSON.parse(sessionStorage.getItem('caretask.session'))"


def test_a_tab_opened_from_another_does_not_share_its_refresh_token(
    board_server: Server, contexts: Any
) -> None:
    me = Person(board_server)
    context, _ = contexts()
    page = sign_in(context, board_server, me)
    live(page)
    first = page.evaluate(SESSION)
    with context.expect_page() as opened:
        page.evaluate("window.open(location.href)")  # a copy of this tab's sessionStorage
    copy = opened.value
    loaded(copy)
    live(copy)
    second = copy.evaluate(SESSION)
    assert second["accessToken"] == first["accessToken"]
    # the refresh token rotates (a second use revokes the session) and the Subscription
    # is deleted at sign-out: both stay the first tab's
    assert second["refreshToken"] is None
    assert second["subscriptionId"] not in (None, first["subscriptionId"])
    assert second["tab"] != first["tab"]
    page.reload()
    loaded(page)
    assert page.evaluate(SESSION) == first


def test_a_callback_that_this_tab_did_not_start_is_refused(
    board_server: Server, contexts: Any
) -> None:
    context, _ = contexts()
    page = context.new_page()
    page.goto(f"{board_server.url}/app/callback?code=stolen&state=forged")
    expect(page.locator("#callback-status")).to_contain_text("was not started from this tab")
    expect(page.get_by_role("button", name="Sign in again")).to_be_focused()
    assert "code=" not in page.url  # the code leaves the address bar either way
    assert page.evaluate("sessionStorage.getItem('caretask.session')") is None


def test_a_task_that_enters_the_view_appears_without_a_reload(
    board_server: Server, system: httpx.Client, contexts: Any
) -> None:
    me = Person(board_server)
    make_task(system, "Already waiting", team=me.teams[0])
    context, _ = contexts()
    page = sign_in(context, board_server, me, "/app/?view=team")
    expect(page.locator("#tasks tbody th a")).to_have_text(["Already waiting"])
    live(page)
    # not on screen before: the list is refreshed within the quiet interval (2 s)
    make_task(system, "Just arrived", team=me.teams[0], due=datetime.now(UTC))
    expect(page.locator("#tasks tbody th a")).to_have_text(
        ["Just arrived", "Already waiting"], timeout=2 * LIVE_SECONDS * 1000
    )
    expect(page.locator("#notices")).to_contain_text("changed by someone else")
    # a change elsewhere refreshes quietly: nothing said about a task never on screen
    make_task(system, "Another team's task", team=f"Group/{uuid.uuid4()}")
    page.wait_for_timeout(2 * LIVE_SECONDS * 1000)
    expect(page.locator("#notices")).to_contain_text("Just arrived")
