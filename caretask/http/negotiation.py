"""Request bodies and headers: media types, size limits, JSON, Prefer, and the format of
the answer (`_format`, Accept)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from caretask.domain.patch import JSON_PATCH
from caretask.http.errors import HttpProblem

JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
ACCEPTABLE = JSON_TYPES | {"*/*", "application/*"}
PATCH_TYPES = JSON_TYPES | {JSON_PATCH}
# `_format` values (FHIR http.html#mime-type) that mean JSON: the short name and the types
JSON_FORMATS = JSON_TYPES | {"json"}
FORM = "application/x-www-form-urlencoded"
_NOT_JSON = "responses are available as application/fhir+json only"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def check_format(pairs: list[tuple[str, str]]) -> bool:
    """Whether `pairs` (a query's or a search form's) hold a `_format`; a 406 when it is
    not JSON."""
    sent = False
    for name, value in pairs:
        if name == "_format":
            # an unencoded `+` (application/fhir+json) arrives as a space
            wanted = value.split(";", 1)[0].strip().replace(" ", "+").lower()
            if not wanted:
                continue  # no format named: Accept decides
            if wanted not in JSON_FORMATS:
                raise HttpProblem(406, "not-supported", f"_format={wanted[:60]}: {_NOT_JSON}")
            sent = True
    return sent


def check_accept(request: Request) -> None:
    """406 when the client asks only for formats we do not produce (say, FHIR XML): in
    `_format`, which FHIR lets stand in for Accept (and overrides it), or else in Accept."""
    query: bytes = request.scope.get("query_string", b"")
    if b"_format" in query and check_format(parse_qsl(query.decode("latin-1"))):
        return
    accept = request.headers.get("accept")
    if not accept:
        return
    for part in accept.split(","):
        kind, _, params = part.strip().partition(";")
        if kind.strip().lower() in ACCEPTABLE and "q=0" not in params.replace(" ", "").split(";"):
            return
    raise HttpProblem(406, "not-supported", _NOT_JSON)


def _check_content_encoding(request: Request) -> None:
    """415 for a body in a content coding (gzip...): read as it is, it was a confusing 400
    about its bytes. RFC 9110 15.5.16: 415, with the codings accepted in Accept-Encoding."""
    encoding = request.headers.get("content-encoding")
    if encoding is None:
        return
    codings = {c.strip().lower() for c in encoding.split(",")} - {"", "identity"}
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    if codings and has_body:
        shown = encoding.strip()[:40]
        raise HttpProblem(
            415,
            "not-supported",
            f"Content-Encoding {shown} is not supported: send the body unencoded (identity)",
            {"Accept-Encoding": "identity"},
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes before reading them all."""
    _check_content_encoding(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise HttpProblem(400, "invalid", "Content-Length is not a number")
        if int(declared) > limit:
            raise HttpProblem(413, "too-long", f"the body is larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpProblem(413, "too-long", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_json_media_type(
    request: Request,
    accepted: frozenset[str] = JSON_TYPES,
    names: str = "application/fhir+json or application/json",
) -> None:
    kind = media_type(request)
    if kind not in accepted:
        shown = kind[:80] or "none"
        raise HttpProblem(415, "not-supported", f"Content-Type must be {names}, not {shown}")
    charset = request.headers.get("content-type", "").lower().partition("charset=")[2]
    if charset and charset.strip().strip('"') not in ("utf-8", "utf8"):
        raise HttpProblem(415, "not-supported", "only the UTF-8 charset is accepted")


async def read_json_body(request: Request, limit: int) -> bytes:
    """The raw body of a request that must send JSON: the service reads it as a Task (as
    `caretask import` reads a line)."""
    _check_json_media_type(request)
    return await read_body(request, limit)


async def read_optional_json_body(request: Request, limit: int) -> bytes:
    """read_json_body's, or b"" when the request sends no body (an operation whose
    parameters are all optional may be POSTed without one, and so without a type)."""
    empty = request.headers.get("content-length", "0") == "0" and not request.headers.get(
        "transfer-encoding"
    )
    if empty:
        return b""
    return await read_json_body(request, limit)


async def read_patch_body(request: Request, limit: int) -> bytes:
    """The raw body of a PATCH: a JSON Patch, or a FHIRPath Patch (a Parameters resource)
    in FHIR JSON; which one, media_type tells."""
    _check_json_media_type(
        request,
        PATCH_TYPES,
        f"{JSON_PATCH} (a JSON Patch) or application/fhir+json (a FHIRPath Patch)",
    )
    return await read_body(request, limit)


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header's preferences (RFC 7240), e.g. {'return': 'representation'}."""
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for token in header.split(","):
            name, _, value = token.strip().partition("=")
            if name:
                out[name.strip().lower()] = value.strip().strip('"').lower()
    return out
