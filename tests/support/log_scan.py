"""Values that must never reach a log, and the search of the server logs for them.

Every request the tests send through Server.client() or Server.token() is read by
remember_sent: task descriptions, note texts, patient references and ids, search values
that carry them, client secrets and access tokens. At the end of the session every server's
log is searched for them (conftest's _no_phi_in_server_logs runs scan_server_logs), so a
change that starts logging PHI or a secret fails the run instead of going unnoticed."""

from __future__ import annotations

import json
import time
from contextlib import suppress
from pathlib import Path
from urllib.parse import parse_qsl, quote

import httpx

SENT: set[str] = set()
LOG_SCAN: list[str] = []  # the scan's summary, printed at the end of the run
PHI_PARAMETERS = {"patient", "subject", "for", "description", "_text", "_content", "note"}
MIN_SENT_LENGTH = 8  # shorter values ("Urgent") would match unrelated log text


def remember(value: object) -> None:
    """Add a sent value to those searched for (a patient reference with its bare id)."""
    if isinstance(value, str) and len(value) >= MIN_SENT_LENGTH:
        SENT.add(value)
        if value.startswith("Patient/"):
            remember(value.removeprefix("Patient/"))


def _remember_pairs(pairs: list[tuple[str, str]]) -> None:
    for name, value in pairs:
        if name.split(":")[0].split(".")[0] in PHI_PARAMETERS or name == "client_secret":
            for part in value.split(","):
                remember(part)


def _remember_body(body: object) -> None:
    if not isinstance(body, dict):
        return
    remember(body.get("description"))
    for key in ("for", "subject"):
        ref = body.get(key)
        if isinstance(ref, dict):
            remember(ref.get("reference"))
    notes = body.get("note")
    for note in notes if isinstance(notes, list) else []:
        if isinstance(note, dict):
            remember(note.get("text"))


def remember_sent(request: httpx.Request) -> None:
    """An httpx request hook: remember the PHI, secrets and tokens a request carries."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        remember(auth[7:].strip())
    _remember_pairs(parse_qsl(request.url.query.decode(), keep_blank_values=True))
    try:
        content = request.content
    except httpx.RequestNotRead:
        return
    kind = request.headers.get("content-type", "")
    if "json" in kind:
        with suppress(ValueError, RecursionError):  # hostile bodies are sent too
            _remember_body(json.loads(content))
    elif "x-www-form-urlencoded" in kind:
        _remember_pairs(parse_qsl(content.decode(errors="replace"), keep_blank_values=True))


def leaked_values(log_text: str, sent: set[str]) -> list[str]:
    """The sent values that appear in a log, raw, percent-encoded or as a JSON log line
    writes them (escaped)."""
    return sorted(
        v
        for v in sent
        if v in log_text
        or quote(v, safe="", errors="backslashreplace") in log_text
        or json.dumps(v, ensure_ascii=False)[1:-1] in log_text
    )


def scan_server_logs(root: Path) -> dict[str, list[str]]:
    """Search every server log under `root` for the values sent; the leaks found, by log
    (at most five values each, cut to 40 characters). The summary goes to LOG_SCAN."""
    started = time.perf_counter()
    logs = sorted(root.rglob("server-*.log"))
    leaks = {}
    for path in logs:
        found = leaked_values(path.read_text(errors="replace"), SENT)
        if found:
            leaks[str(path)] = [v[:40] for v in found[:5]]
    size = sum(path.stat().st_size for path in logs)
    LOG_SCAN.append(
        f"searched {len(logs)} server logs ({size:,} bytes) for {len(SENT):,} sent values "
        f"(PHI, secrets, tokens) in {time.perf_counter() - started:.2f} s: "
        f"{'found in ' + str(len(leaks)) if leaks else 'none found'}"
    )
    return leaks
