"""The task board: the pages people use in a browser, at /app/.

The pages are server-rendered shells (Jinja2); the browser code (plain ES modules under
caretask/web/static, no build step) signs in with the authorization code grant and PKCE,
then calls the FHIR API with the person's token. No page carries patient data: it comes
only from the API, whose answers no cache keeps. The static files are served under a
version segment, the hash of all of them, so that they may be cached for a year and a
release is never mixed with the last one's files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import Response

from caretask.auth.clients import BOARD_CLIENT_ID, BOARD_SCOPE
from caretask.domain.references import ID_PATTERN
from caretask.http.urls import base_url, link_path

WEB = Path(__file__).resolve().parent.parent / "web"
STATIC = WEB / "static"
TEMPLATES = WEB / "templates"

# what the board asks for at sign-in: its client's scopes, and a refresh token (SMART)
CLIENT_ID = BOARD_CLIENT_ID
SCOPE = f"{BOARD_SCOPE} offline_access"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
YEAR = 365 * 86_400


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str


def _load_static() -> tuple[str, dict[str, StaticFile]]:
    """Every static file, read once, and the version: a hash over their names and bodies."""
    files: dict[str, StaticFile] = {}
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if not path.is_file() or path.suffix not in _TYPES:
            continue
        name = path.relative_to(STATIC).as_posix()
        body = path.read_bytes()
        digest.update(name.encode() + b"\0" + body + b"\0")
        files[name] = StaticFile(body, _TYPES[path.suffix])
    return digest.hexdigest()[:16], files


VERSION, FILES = _load_static()
STATIC_PREFIX = f"/app/static/{VERSION}"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _content_security_policy(base: str) -> str:
    """Only this server's scripts, styles and connections (the websocket's origin named:
    browsers of CSP level 2 do not count ws: as 'self')."""
    parts = urlsplit(base)
    socket = ("wss://" if parts.scheme == "https" else "ws://") + parts.netloc
    origin = f"{parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self' {origin} {socket}; form-action 'self' {origin}; "
        "base-uri 'none'; frame-ancestors 'none'; manifest-src 'self'"
    )


def _page_headers(base: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": _content_security_policy(base),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        # a shell without data, but tied to the static version: always revalidated
        "Cache-Control": "no-cache",
    }


def render(
    request: Request, template: str, title: str, status: int = 200, **extra: str
) -> Response:
    base = base_url(request)
    body = _templates.get_template(f"board/{template}").render(
        title=title,
        base=base,
        static=link_path(base) + STATIC_PREFIX,
        client_id=CLIENT_ID,
        scope=SCOPE,
        **extra,
    )
    return Response(body, status, _page_headers(base), "text/html; charset=utf-8")


async def board(request: Request) -> Response:
    return render(request, "board.html", "Task board", page="board")


async def task_page(request: Request) -> Response:
    task_id = request.path_params["id"]
    if not ID_PATTERN.fullmatch(task_id):
        return await not_found(request)  # no task could have this id
    return render(request, "task.html", "Task", page="task", task_id=task_id)


async def new_task(request: Request) -> Response:
    return render(request, "new.html", "New task", page="new")


async def callback(request: Request) -> Response:
    return render(request, "callback.html", "Signing in", page="callback")


async def not_found(request: Request) -> Response:
    return render(request, "missing.html", "Not found", 404, page="missing")


async def static(request: Request) -> Response:
    name = request.path_params["path"]
    found = FILES.get(name)
    if found is None or request.path_params["version"] != VERSION:
        # another release's file, or none: never cache the refusal
        return Response(b"not found\n", 404, {"Cache-Control": "no-store"}, "text/plain")
    tag = f'"{VERSION}"'
    headers = {"Cache-Control": f"public, max-age={YEAR}, immutable", "ETag": tag}
    if request.headers.get("if-none-match") == tag:
        return Response(b"", 304, headers)
    return Response(found.body, 200, headers, found.media_type)
