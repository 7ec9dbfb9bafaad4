"""The hostile input corpus: requests that a FHIR Task server must refuse (or answer safely).

Every entry is one raw HTTP request and the status the server must answer with (SPEC 5-7):
a specific 4xx for bad input, 200 for hostile but *valid* searches (injection strings are just
text), or `CLOSED` where the HTTP layer may drop the connection instead of answering. None of
them may write anything. The corpus is generated here so that "a wrong JSON type in every
element" really covers every element of the seed's create body.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from tests.support.seed import SEED_CREATE

CLOSED: Final = "closed"  # the server may close the connection without a response
JSON: Final = {"Content-Type": "application/fhir+json"}
FORM: Final = {"Content-Type": "application/x-www-form-urlencoded"}
JSON_PATCH: Final = {"Content-Type": "application/json-patch+json"}
UNKNOWN_ID: Final = "0b5e3c1e-6f0e-4d8e-9a43-3f8d2a9c7e11"  # never created by any test


@dataclass(frozen=True)
class Entry:
    """One hostile request and the answer it must get."""

    name: str
    method: str
    path: str  # sent as the raw request target: no normalisation, no re-encoding
    expected: int | str  # an HTTP status, or CLOSED
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    authenticated: bool = True  # send the session's valid Bearer token
    empty_bundle: bool = False  # a 200 search that must match no task at all
    raw: bytes | None = None  # sent instead of a request built from the fields above
    bug: str | None = None  # a known server bug: the entry is an expected (strict) failure
    bug_writes: bool = False  # ... and that bug stores a task
    bug_engine: str | None = None  # ... only on this storage engine


def _dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


SEED_BYTES: Final = _dumps(SEED_CREATE)


def _create(name: str, body: bytes, expected: int = 400, **kwargs: Any) -> Entry:
    return Entry(
        name, "POST", "/Task", expected, body, {**JSON, **kwargs.pop("headers", {})}, **kwargs
    )


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """The seed's create body with the element at `path` replaced by `value`."""
    body = copy.deepcopy(SEED_CREATE)
    node: Any = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return body


def _label(path: tuple[str | int, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "[")


# --- 1. malformed and truncated JSON ----------------------------------------------------------


def malformed_json() -> Iterator[Entry]:
    bodies: dict[str, bytes] = {
        "empty-body": b"",
        "whitespace-only": b"  \r\n\t ",
        "lone-open-brace": b"{",
        "lone-close-brace": b"}",
        "unterminated-string": b'{"resourceType": "Task',
        "trailing-comma": b'{"resourceType": "Task",}',
        "missing-colon": b'{"resourceType" "Task"}',
        "single-quotes": b"{'resourceType': 'Task'}",
        "unquoted-key": b'{resourceType: "Task"}',
        "js-comment": b'{"resourceType": "Task" /* hi */}',
        "nan-literal": SEED_BYTES[:-1] + b', "priority": NaN}',
        "infinity-literal": SEED_BYTES[:-1] + b', "priority": Infinity}',
        "two-objects": SEED_BYTES + SEED_BYTES,
        "trailing-garbage": SEED_BYTES + b"x",
        "array-of-tasks": b"[" + SEED_BYTES + b"]",
        "json-null": b"null",
        "json-true": b"true",
        "json-number": b"42",
        "json-string": b'"Task"',
        "empty-object": b"{}",
        "bom-then-truncated": b"\xef\xbb\xbf" + SEED_BYTES[:40],
        "utf16-encoded": json.dumps(SEED_CREATE).encode("utf-16"),
        "bad-escape": SEED_BYTES.replace(b"Ask", b"\\x41sk"),
        "truncated-unicode-escape": SEED_BYTES.replace(b"Ask", b"\\u00"),
        "raw-newline-in-string": SEED_BYTES.replace(b"Ask", b"A\nsk"),
        "raw-tab-in-string": SEED_BYTES.replace(b"Ask", b"A\tsk"),
        "raw-nul-byte-in-string": SEED_BYTES.replace(b"Ask", b"A\x00sk"),
        "nul-byte-outside-string": b"\x00" + SEED_BYTES,
        "huge-number": SEED_BYTES[:-1] + b', "priority": 1' + b"0" * 5000 + b"}",
    }
    for name, body in bodies.items():
        yield _create(f"json/{name}", body)
    for cut in (1, 10, 50, 100, 200, 400, len(SEED_BYTES) // 2, len(SEED_BYTES) - 1):
        yield _create(f"json/truncated-at-{cut}", SEED_BYTES[:cut])


# --- 2. wrong JSON types in every element -----------------------------------------------------

WRONG_TYPES: Final[dict[str, Any]] = {
    "number": 42,
    "float": 1.5,
    "bool": True,
    "string": "x",
    "array": ["x"],
    "empty-array": [],
    "object": {"x": 1},
    "empty-object": {},
    "null": None,
}

# the JSON type each element of the seed has, and so which wrong types make sense for it
PRIMITIVE_PATHS: Final[list[tuple[str | int, ...]]] = [
    ("resourceType",),
    ("status",),
    ("description",),
    ("authoredOn",),
    ("extension", 0, "url"),
    ("extension", 0, "valueReference", "reference"),
    ("extension", 0, "valueReference", "display"),
    ("requester", "reference"),
    ("for", "reference"),
    ("owner", "reference"),
    ("restriction", "period", "end"),
    ("note", 0, "text"),
    ("note", 0, "time"),
    ("note", 0, "authorReference", "reference"),
    ("input", 0, "type", "text"),
    ("input", 0, "valueString"),
]
OBJECT_PATHS: Final[list[tuple[str | int, ...]]] = [
    ("extension", 0),
    ("extension", 0, "valueReference"),
    ("requester",),
    ("for",),
    ("owner",),
    ("restriction",),
    ("restriction", "period"),
    ("note", 0),
    ("note", 0, "authorReference"),
    ("input", 0),
    ("input", 0, "type"),
]
ARRAY_PATHS: Final[list[tuple[str | int, ...]]] = [("extension",), ("note",), ("input",)]


def _typed(name: str, body: dict[str, Any]) -> Entry:
    return _create(f"type/{name}", _dumps(body))


def wrong_types() -> Iterator[Entry]:
    for path in PRIMITIVE_PATHS:
        for kind in ("number", "bool", "array", "object", "null"):
            yield _typed(f"{_label(path)}-as-{kind}", _with(path, WRONG_TYPES[kind]))
    for path in OBJECT_PATHS:
        for kind in ("number", "string", "array", "null", "empty-object"):
            yield _typed(f"{_label(path)}-as-{kind}", _with(path, WRONG_TYPES[kind]))
    for path in ARRAY_PATHS:
        for kind in ("number", "string", "object", "null", "empty-array"):
            yield _typed(f"{_label(path)}-as-{kind}", _with(path, WRONG_TYPES[kind]))
        yield _create(f"type/{_label(path)}-item-as-string", _dumps(_with(path, ["x"])))
        yield _create(f"type/{_label(path)}-item-as-null", _dumps(_with(path, [None])))
    # numbers where FHIR wants JSON strings, in their most tempting forms
    yield _create("type/status-as-quoted-json", _dumps(_with(("status",), '"requested"')))
    yield _create(
        "type/restriction-as-json-string",
        _dumps(_with(("restriction",), json.dumps(SEED_CREATE["restriction"]))),
    )
    yield _create(
        "type/note-as-json-string", _dumps(_with(("note",), json.dumps(SEED_CREATE["note"])))
    )
    yield _create("type/description-empty-string", _dumps(_with(("description",), "")))
    yield _typed("authoredOn-as-epoch-number", _with(("authoredOn",), 1647784800))


# --- 3. hostile values: sizes, nesting, duplicate keys, control characters, bad UTF-8 ----------

MIB: Final = 1024 * 1024


def hostile_values() -> Iterator[Entry]:
    yield _create("size/description-2-MiB", _dumps(_with(("description",), "x" * 2 * MIB)), 413)
    yield _create("size/body-1-MiB-plus-1", SEED_BYTES + b" " * (MIB + 1 - len(SEED_BYTES)), 413)
    yield _create("size/10000-notes", _dumps(_with(("note",), SEED_CREATE["note"] * 10000)), 413)
    yield _create("size/garbage-2-MiB", b"\xff" * 2 * MIB, 413)
    for depth in (64, 1000, 50_000):
        nested = b'{"resourceType": "Task", "code": ' + b'{"coding": [' * depth
        yield _create(f"nesting/unclosed-{depth}-deep", nested)
        closed = nested + b"]}" * depth + b"}"
        yield _create(f"nesting/closed-{depth}-deep", closed)
    yield _create("nesting/100000-open-brackets", b"[" * 100_000)
    yield _create("nesting/250000-deep-is-over-the-body-limit", b'{"a":' * 250_000, 413)
    yield _create(
        "nesting/extension-in-extension-200",
        _dumps(_with(("extension",), [_nested_extension(200)])),
    )
    duplicate = b'{"resourceType": "Task", "resourceType": "Patient",' + SEED_BYTES[1:]
    yield _create("duplicate/resourceType-key", duplicate)
    dup_status = SEED_BYTES[:-1] + b', "status": "completed"}'
    yield _create("duplicate/status-key", dup_status)
    dup_nested = SEED_BYTES.replace(b'"note": [{', b'"note": [{"text": "first", ', 1)
    assert dup_nested != SEED_BYTES
    yield _create("duplicate/nested-note-text", dup_nested)
    spaced = b'{"resourceType" : "Task" , "status" : "ready" , "status" : "draft"}'
    yield _create("duplicate/spaced-status-key", spaced)
    dup_for = SEED_BYTES[:-1] + b', "for": {"reference": "Practitioner/x"}}'
    yield _create("duplicate/for-key-last-wrong-type", dup_for)
    for char, label in [
        ("\u0000", "nul"),
        ("\u0001", "soh"),
        ("\u001b", "escape"),
        ("\u007f", "del"),
        ("\u0008", "backspace"),
        ("\u001f", "unit-separator"),
    ]:
        for path in [("description",), ("note", 0, "text"), ("for", "reference")]:
            body = _with(path, f"a{char}b")
            yield _create(f"control/{label}-in-{_label(path)}", _dumps(body))
    yield _create("control/nul-in-key", SEED_BYTES[:-1] + b', "desc\\u0000ription": "x"}')
    invalid_utf8 = {
        "lone-continuation-byte": b"\x80",
        "ff-byte": b"\xff",
        "overlong-slash": b"\xc0\xaf",
        "truncated-3-byte": b"\xe2\x82",
        "utf8-encoded-surrogate": b"\xed\xa0\x80",
        "beyond-u10ffff": b"\xf4\x90\x80\x80",
        "latin-1-e-acute": b"\xe9",
    }
    for name, raw in invalid_utf8.items():
        yield _create(f"utf8/{name}-in-description", SEED_BYTES.replace(b"Ask", raw))
    yield _create("utf8/lone-high-surrogate-escape", SEED_BYTES.replace(b"Ask", b"\\ud800"))
    yield _create("utf8/lone-low-surrogate-escape", SEED_BYTES.replace(b"Ask", b"\\udc00x"))
    yield _create("utf8/invalid-byte-in-key", SEED_BYTES.replace(b'"status"', b'"stat\xffus"'))


def _nested_extension(depth: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"url": "http://example.org/x", "valueString": "leaf"}
    for _ in range(depth):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    return ext


# --- 4. injection strings: valid searches that must find nothing ------------------------------

INJECTIONS: Final[dict[str, str]] = {
    "sql-drop-table": "'; DROP TABLE tasks; --",
    "sql-or-1-eq-1": '" OR 1=1 --',
    "sql-like-wildcards": "%' OR '%'='",
    "sql-union": "x' UNION SELECT secret FROM signing_keys --",
    "sql-sleep": "1' AND pg_sleep(5) --",
    "script-tag": "<script>alert(1)</script>",
    "template": "{{7*7}}",
    "jndi": "${jndi:ldap://x}",
    "rtl-override": "\u202eksat",
    "emoji": "\U0001f4a9\U0001f9d1\u200d\u2695\ufe0f",
}
STRING_PARAMS: Final = [
    "description",
    "description:contains",
    "description:exact",
    "label",
    "label:exact",
]
# references have a Type/id or id syntax, coded tokens a fixed value set, dates a date syntax
REFERENCE_PARAMS: Final = [
    "patient",
    "subject",
    "owner",
    "requester",
    "group",
    "focus",
    "based-on",
    "part-of",
    "encounter",
]
FREE_TOKEN_PARAMS: Final = [
    "identifier",
    "group-identifier",
    "code",
    "business-status",
    "performer",
]
CODED_TOKEN_PARAMS: Final = ["status", "intent", "priority", "_id"]
DATE_PARAMS: Final = ["authored-on", "_lastUpdated", "due", "period", "modified"]


def _query(name: str, value: str) -> str:
    return f"/Task?{quote(name, safe=':_')}={quote(value, safe='')}"


# ANDed with the injected condition so that "matches nothing" holds whatever other tests
# stored on the shared server (some store these very strings, to read them back)
NOBODY: Final = f"patient=Patient/{UNKNOWN_ID}"


def injections() -> Iterator[Entry]:
    for label, value in INJECTIONS.items():
        for param in STRING_PARAMS + FREE_TOKEN_PARAMS:
            path = f"{_query(param, value)}&{NOBODY}"
            yield Entry(f"inject/{param}-{label}", "GET", path, 200, empty_bundle=True)
        # references, coded tokens and dates have a syntax: an injection is a malformed value
        for param in REFERENCE_PARAMS + CODED_TOKEN_PARAMS + DATE_PARAMS:
            yield Entry(f"inject/{param}-{label}", "GET", _query(param, value), 400)
        # the form-encoded search takes the same parameters
        form = f"description={quote(value, safe='')}&label={quote(value, safe='')}&{NOBODY}"
        form = form.encode()
        yield Entry(
            f"inject/post-search-{label}",
            "POST",
            "/Task/_search",
            200,
            form,
            FORM,
            empty_bundle=True,
        )
    for wildcard in ("%", "_", "*", "\\", "%%", "[a-z]"):
        yield Entry(
            f"inject/description-exact-{wildcard}",
            "GET",
            f"{_query('description:exact', wildcard)}&{NOBODY}",
            200,
            empty_bundle=True,
        )
    # no stored string can hold a NUL (PostgreSQL text cannot): a 400 on both engines
    yield Entry("inject/description-nul-byte", "GET", "/Task?description=a%00b", 400)
    yield Entry(
        "inject/description-invalid-utf8",
        "GET",
        "/Task?description=%FF%FE",
        400,
    )
    yield Entry("inject/sort-sql", "GET", "/Task?_sort=status;DROP%20TABLE%20tasks", 400)
    yield Entry("inject/sort-column-name", "GET", "/Task?_sort=resource", 400)
    yield Entry("inject/elements-sql", "GET", "/Task?_elements=id,(SELECT%201)", 400)
    yield Entry("inject/param-name-sql", "GET", "/Task?description%27%3B--=x", 400)


# --- 5. ids, paths, paging, parameters, URL and header sizes, auth, methods, media types -------


def paths_and_ids() -> Iterator[Entry]:
    ids = {
        "encoded-traversal": "..%2F..%2Fetc%2Fpasswd",
        "double-encoded-traversal": "..%252F..%252Fetc%252Fpasswd",
        "raw-traversal-in-id": "..%5C..%5Cwindows",
        "nul": "%00",
        "nul-after-uuid": UNKNOWN_ID + "%00",
        "sql": "1%27%20OR%20%271%27%3D%271",
        "script": "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "overlong-id": "a" * 2000,
        "unknown-uuid": UNKNOWN_ID,
        "emoji": "%F0%9F%92%A9",
        "invalid-utf8": "%FF%FE",
        "dot": ".",
        "dot-dot-encoded": "%2E%2E",
    }
    for label, raw_id in ids.items():
        yield Entry(f"id/read-{label}", "GET", f"/Task/{raw_id}", 404)
        yield Entry(f"id/history-{label}", "GET", f"/Task/{raw_id}/_history", 404)
        yield Entry(f"id/delete-{label}", "DELETE", f"/Task/{raw_id}", 404)
    yield Entry("id/raw-dot-dot-segments", "GET", "/Task/../../etc/passwd", 404)
    yield Entry(
        "id/raw-dot-dot-to-metadata", "GET", "/Task/../../../../metadata/../etc/passwd", 404
    )
    yield Entry("id/version-not-a-number", "GET", f"/Task/{UNKNOWN_ID}/_history/abc", 404)
    yield Entry("id/version-sql", "GET", f"/Task/{UNKNOWN_ID}/_history/1%20OR%201=1", 404)
    yield Entry("id/absolute-form-target", "GET", "http://127.0.0.1/Task/" + UNKNOWN_ID, 404)
    put = {**JSON, "If-Match": 'W/"1"'}
    yield Entry("id/update-unknown-id", "PUT", f"/Task/{UNKNOWN_ID}", 404, SEED_BYTES, put)
    yield Entry(
        "id/update-traversal-id", "PUT", "/Task/..%2F..%2Fetc%2Fpasswd", 404, SEED_BYTES, put
    )
    yield Entry("id/update-nul-id", "PUT", "/Task/%00", 404, SEED_BYTES, put)
    yield Entry(
        "id/delete-malformed-if-match",
        "DELETE",
        f"/Task/{UNKNOWN_ID}",
        400,
        headers={"If-Match": "1 OR 1=1"},
    )


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def change_feed() -> Iterator[Entry]:
    """GET /Task/_history and /_history: their parameters, and forged paging cursors."""
    cases: list[tuple[str, str, int]] = [
        ("feed/since-not-a-date", "_since=yesterday", 400),
        ("feed/since-sql", "_since=2024%27%20OR%20%271%27%3D%271", 400),
        ("feed/since-month-13", "_since=2024-13-01T00:00:00Z", 400),
        ("feed/since-far-future", "_since=9999-12-31T23:59:59Z", 200),
        ("feed/since-year-one", "_since=0001", 200),
        ("feed/at-not-a-date", "_at=now", 400),
        ("feed/count-huge-is-clamped", "_count=100000", 200),
        ("feed/count-negative", "_count=-1", 400),
        ("feed/offset-not-taken", "_offset=10", 400),
        ("feed/unknown-parameter", "status=requested", 400),
        ("feed/cursor-not-base64", "_cursor=%25%25%25", 400),
        ("feed/cursor-three-numbers", f"_cursor={_cursor('1.2.3')}", 400),
        ("feed/cursor-five-numbers", f"_cursor={_cursor('1.2.3.4.5')}", 400),
        ("feed/cursor-huge-numbers", f"_cursor={_cursor('.'.join(['9' * 30] * 4))}", 400),
        ("feed/cursor-words", f"_cursor={_cursor('a.b.c.d')}", 400),
        ("feed/cursor-sql", "_cursor=" + _cursor("1' OR '1'='1"), 400),
        ("feed/cursor-valid-form", f"_cursor={_cursor('1.2.3.4')}", 200),
        ("feed/cursor-unicode-digits", "_cursor=" + _cursor("\u0661.\u0662.\u0663.\u0664"), 400),
    ]
    for name, query, status in cases:
        yield Entry(name, "GET", f"/Task/_history?{query}", status)
        yield Entry(f"{name}-system", "GET", f"/_history?{query}", status)
    yield Entry("feed/post-type-history", "POST", "/Task/_history", 405, SEED_BYTES, JSON)
    yield Entry("feed/delete-system-history", "DELETE", "/_history", 405)


def paging_and_parameters() -> Iterator[Entry]:
    cases: list[tuple[str, str, int]] = [
        ("paging/count-huge-is-clamped", "_count=100000", 200),
        ("paging/count-at-limit-is-clamped", "_count=1000000000000", 200),
        ("paging/count-over-limit", "_count=1000000000001", 400),
        ("paging/count-beyond-int64", "_count=99999999999999999999999", 400),
        ("paging/count-negative", "_count=-1", 400),
        ("paging/count-float", "_count=1.5", 400),
        ("paging/count-hex", "_count=0x10", 400),
        ("paging/count-empty", "_count=", 400),
        ("paging/count-unicode-digits", "_count=%D9%A1%D9%A0", 400),
        ("paging/offset-negative", "_offset=-1", 400),
        ("paging/offset-at-limit", "_offset=2147483647", 200),
        ("paging/offset-over-limit", "_offset=2147483648", 400),
        ("paging/offset-beyond-int64", "_offset=99999999999999999999", 400),
        ("paging/offset-exponent", "_offset=1e9", 400),
        ("params/unknown", "patinet=x", 400),
        ("params/unknown-underscore", "_foo=1", 400),
        ("params/unknown-modifier", "description:bogus=x", 400),
        ("params/modifier-not-for-type", "description:not=x", 400),
        ("params/empty-name", "=x", 400),
        ("params/include-unknown", "_include=Task:owner", 400),
        ("params/summary-bogus", "_summary=maybe", 400),
        ("params/summary-true", "_summary=true", 200),
        ("params/summary-with-elements", "_summary=text&_elements=status", 400),
        ("params/summary-repeated", "_summary=true&_summary=data", 400),
        ("params/pretty-true", "_pretty=true", 200),
        ("params/pretty-and-count", "_pretty=true&_summary=count", 200),
        ("params/total-bogus", "_total=lots", 400),
        ("params/format-xml", "_format=xml", 406),
        ("params/format-fhir-xml", "_format=application/fhir%2Bxml", 406),
        ("params/format-turtle", "_format=ttl", 406),
        ("params/format-unencoded-plus-json", "_format=application/fhir+json", 200),
        ("params/sort-unknown", "_sort=colour", 400),
        ("params/date-bad-prefix", "authored-on=zz2024", 400),
        ("params/date-not-a-date", "due=yesterday", 400),
        ("params/date-month-13", "due=2024-13", 400),
        ("params/status-unknown-code", "status=done", 400),
        ("params/missing-not-boolean", "owner:missing=maybe", 400),
        ("params/id-too-long", "_id=" + "a" * 65, 400),
        ("params/hundreds-of-ors", "status=" + ",".join(["requested"] * 500), 400),
        ("params/hundreds-of-ands", "&".join(["label=x"] * 500), 400),
        ("params/thousands-of-ands-past-the-url-limit", "&".join(["label=x"] * 2000), 414),
    ]
    for name, query, status in cases:
        yield Entry(name, "GET", f"/Task?{query}", status)


def transport() -> Iterator[Entry]:
    # refused by the HTTP protocol (caretask.http.timeouts), as OperationOutcomes
    long_url = "/Task?description=" + "a" * 100_000
    yield Entry("url/100-KB-query", "GET", long_url, 414)
    yield Entry("url/100-KB-path", "GET", "/Task/" + "a" * 100_000, 414)
    bad_length = [("not-a-number", "abc"), ("negative", "-1"), ("two-values", "10, 20")]
    for label, length in bad_length:
        headers = {**JSON, "Content-Length": length}
        yield Entry(f"header/content-length-{label}", "POST", "/Task", 400, SEED_BYTES, headers)
    big = {"X-Big": "a" * 100_000}
    yield Entry("header/100-KB-header", "GET", "/Task?_count=1", 431, headers=big)
    many = {f"X-H{i}": "x" for i in range(1000)}
    yield Entry("header/1000-headers", "GET", "/Task?_count=1", 431, headers=many)
    yield Entry("url/10-KB-query", "GET", "/Task?description=" + "a" * 10_000, 414)


def _raw(name: str, request: bytes, expected: int) -> Entry:
    return Entry(name, "GET", "/", expected, raw=request, authenticated=False)


def malformed_http() -> Iterator[Entry]:
    """Requests the HTTP parser refuses: a 400 OperationOutcome, then the connection closes."""
    host = b"Host: 127.0.0.1\r\n"
    requests = {
        "garbage-request-line": b"GARBAGE\r\n\r\n",
        "binary-request-line": b"\x00\x01\x02\xff\r\n\r\n",
        "version-garbage": b"GET /metadata HTTP/x.y\r\n" + host + b"\r\n",
        "space-in-method": b"G ET /metadata HTTP/1.1\r\n" + host + b"\r\n",
        "space-before-colon": b"GET /metadata HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n",
        "header-without-colon": b"GET /metadata HTTP/1.1\r\n" + host + b"NoColon\r\n\r\n",
        "control-char-in-header-name": b"GET /metadata HTTP/1.1\r\n" + host + b"X\x01Y: z\r\n\r\n",
        "nul-in-header-value": b"GET /metadata HTTP/1.1\r\n" + host + b"X-A: a\x00b\r\n\r\n",
        "obs-fold": b"GET /metadata HTTP/1.1\r\n" + host + b"X-A: a\r\n b\r\n\r\n",
        "content-length-and-chunked": b"POST /Task HTTP/1.1\r\n"
        + host
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "bad-chunk-size": b"POST /Task HTTP/1.1\r\n"
        + host
        + b"Content-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"zz\r\n{}\r\n0\r\n\r\n",
        "two-content-lengths": b"POST /Task HTTP/1.1\r\n"
        + host
        + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    }
    for name, request in requests.items():
        yield _raw(f"http/{name}", request, 400)


def head_sizes() -> Iterator[Entry]:
    """Heads past the URL and header limits, however they are sent: 414 and 431, no token
    needed (the protocol refuses a head that is still growing past them)."""
    mib = 1024 * 1024
    yield _raw("head/1-MiB-url", b"GET /Task?description=" + b"a" * mib, 414)
    yield _raw("head/1-MiB-path", b"GET /Task/" + b"a" * mib, 414)
    header = b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: "
    yield _raw("head/1-MiB-header-line", header + b"a" * mib, 431)
    yield _raw("head/1-MiB-of-small-headers", header + b"a\r\n" + b"X-A: b\r\n" * (mib // 8), 431)
    yield _raw("head/1-MiB-header-name", header[:-11] + b"X" * mib, 431)
    yield Entry("head/url-of-17-KB", "GET", "/Task?description=" + "a" * 17_000, 414)
    yield Entry("head/url-of-70-KB", "GET", "/Task?description=" + "a" * 70_000, 414)
    yield Entry("head/url-of-8-KB-is-served", "GET", "/Task?_count=1&x=" + "a" * 7_000, 400)
    big = {f"X-Pad-{i}": "a" * 1000 for i in range(20)}
    yield Entry("head/20-KB-of-headers", "GET", "/Task?_count=1", 431, headers=big)
    yield Entry(
        "head/20-KB-of-headers-no-token", "GET", "/Task", 431, headers=big, authenticated=False
    )


def chunk_framing() -> Iterator[Entry]:
    """The bytes of a chunked request besides its head and its body (chunk-size lines, chunk
    extensions, the trailer section) past the header limit: 431 with no token needed, the
    token endpoint reading the body first; trailer fields are never taken for headers."""
    mib = 1024 * 1024
    chunked = b"Host: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    chunked += b"Transfer-Encoding: chunked\r\n\r\n"
    token = b"POST /auth/token HTTP/1.1\r\n" + chunked
    last = b"1d\r\ngrant_type=client_credentials\r\n0\r\n"
    yield _raw("chunked/1-MiB-trailer-line", token + last + b"X-Endless: " + b"a" * mib, 431)
    yield _raw("chunked/1-MiB-of-small-trailers", token + last + b"X-A: b\r\n" * (mib // 8), 431)
    yield _raw("chunked/1-MiB-chunk-extension", token + b"5;ext=" + b"a" * mib, 431)
    yield _raw("chunked/1-MiB-chunk-size-line", token + b"0" * mib, 431)
    search = b"POST /Task/_search HTTP/1.1\r\n" + chunked + b"5\r\n_id=x\r\n0\r\n"
    yield _raw("chunked/1-MiB-trailer-after-the-answer", search + b"X-Endless: " + b"a" * mib, 401)
    fields = b"".join(b"X-T-%d: x\r\n" % i for i in range(101))  # 101 headers would be 431
    yield _raw("chunked/101-trailer-fields-are-not-headers", search + fields + b"\r\n", 401)


def auth() -> Iterator[Entry]:
    no_auth: dict[str, dict[str, str]] = {
        "no-token": {},
        "garbage-token": {"Authorization": "Bearer garbage"},
        "sql-token": {"Authorization": "Bearer ' OR 1=1 --"},
        "empty-bearer": {"Authorization": "Bearer "},
        "basic-scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "jwt-alg-none": {
            "Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzY29wZSI6InN5c3RlbS9UYXNrLndyaXRlIn0."
        },
        "8-KB-token": {"Authorization": "Bearer " + "a" * 8000},
    }
    for label, headers in no_auth.items():
        yield Entry(
            f"auth/{label}-search", "GET", "/Task", 401, headers=headers, authenticated=False
        )
        yield Entry(
            f"auth/{label}-create",
            "POST",
            "/Task",
            401,
            SEED_BYTES,
            {**JSON, **headers},
            authenticated=False,
        )
    token_form = b"grant_type=client_credentials&client_id=%27%20OR%201%3D1%20--&client_secret=x"
    yield Entry(
        "auth/token-sql-client-id",
        "POST",
        "/auth/token/",
        401,
        token_form,
        FORM,
        authenticated=False,
    )
    yield Entry(
        "auth/token-json-body",
        "POST",
        "/auth/token/",
        400,
        b'{"grant_type": "client_credentials"}',
        JSON,
        authenticated=False,
    )
    yield Entry(
        "auth/token-password-grant",
        "POST",
        "/auth/token/",
        400,
        b"grant_type=password&username=admin&password=admin",
        FORM,
        authenticated=False,
    )


def sign_in() -> Iterator[Entry]:
    """The sign-in endpoint (GET and POST /auth/authorize) and a person's token grants: a
    request it cannot trust is an error page (never a redirect), a bad grant an OAuth error."""
    xss = quote("<script>alert(1)</script>", safe="")
    pages = {
        "sql-client-id": f"client_id={quote(chr(39) + ' OR 1=1 --', safe='')}&redirect_uri=x",
        "nul-client-id": "client_id=a%00b&redirect_uri=https://a.example/cb",
        "script-client-id": f"client_id={xss}&redirect_uri=https://a.example/cb",
        "javascript-redirect": "client_id=caretask-board&redirect_uri=javascript:alert(1)",
        "foreign-redirect": "client_id=caretask-board&redirect_uri=https://evil.example/app/callback",
        "repeated-client-id": "client_id=caretask-board&client_id=other&redirect_uri=x",
        "no-parameters": "",
        "huge-client-id": "client_id=" + "a" * 6000 + "&redirect_uri=x",
    }
    for label, query in pages.items():
        path = "/auth/authorize" + (f"?{query}" if query else "")
        yield Entry(f"sign-in/{label}", "GET", path, 400, authenticated=False)
    forms = {
        "no-csrf": b"client_id=caretask-board&redirect_uri=https://evil.example/cb"
        b"&username=admin&password=admin",
        "script-username": b"client_id=caretask-board&redirect_uri=x&username=%3Cscript%3E",
        "empty": b"",
    }
    for label, body in forms.items():
        yield Entry(
            f"sign-in/post-{label}", "POST", "/auth/authorize", 400, body, FORM,
            authenticated=False,
        )  # fmt: skip
    yield Entry(
        "sign-in/post-json", "POST", "/auth/authorize", 400, b'{"username": "admin"}', JSON,
        authenticated=False,
    )  # fmt: skip
    grants = {
        "code-missing-verifier": b"grant_type=authorization_code&code=x&redirect_uri=x"
        b"&client_id=caretask-board",
        "code-nul": b"grant_type=authorization_code&code=a%00b&redirect_uri=x"
        b"&client_id=caretask-board&code_verifier=" + b"a" * 43,
        "code-sql": b"grant_type=authorization_code&code=%27%20OR%201%3D1%20--&redirect_uri=x"
        b"&client_id=caretask-board&code_verifier=" + b"a" * 43,
        "refresh-sql": b"grant_type=refresh_token&refresh_token=%27%20OR%201%3D1%20--"
        b"&client_id=caretask-board",
        "refresh-missing-client": b"grant_type=refresh_token&refresh_token=x",
    }
    for label, body in grants.items():
        yield Entry(
            f"sign-in/token-{label}", "POST", "/auth/token/", 400, body, FORM,
            authenticated=False,
        )  # fmt: skip


def methods_and_media() -> Iterator[Entry]:
    yield Entry("method/delete-unknown-task", "DELETE", f"/Task/{UNKNOWN_ID}", 404)
    # DELETE and PATCH /Task are conditional: without a search they have nothing to change
    yield Entry("method/delete-all", "DELETE", "/Task", 400)
    yield Entry("method/patch-collection", "PATCH", "/Task", 400, b"[]", JSON_PATCH)
    yield Entry("method/get-validate-is-a-read-of-no-task", "GET", "/Task/$validate", 404)
    yield Entry("method/trace", "TRACE", "/Task", 405)
    # PUT /Task is a conditional update: without a search it has nothing to update
    yield Entry("method/put-collection-without-search", "PUT", "/Task", 400, SEED_BYTES, JSON)
    yield Entry("method/post-to-id", "POST", f"/Task/{UNKNOWN_ID}", 405, SEED_BYTES, JSON)
    yield Entry("method/post-metadata", "POST", "/metadata", 405, SEED_BYTES, JSON)
    yield Entry("method/options-task", "OPTIONS", "/Task", 204, authenticated=False)
    yield Entry("method/options-task-id", "OPTIONS", f"/Task/{UNKNOWN_ID}", 204)
    yield Entry("method/webdav", "PROPFIND", f"/Task/{UNKNOWN_ID}", 405)
    yield Entry(
        "method/preflight-without-cors",
        "OPTIONS",
        "/Task",
        204,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"},
        authenticated=False,
    )
    yield Entry("media/read-format-xml", "GET", f"/Task/{UNKNOWN_ID}?_format=xml", 406)
    yield Entry("media/metadata-format-xml", "GET", "/metadata?_format=xml", 406)
    yield Entry("media/search-form-format-xml", "POST", "/Task/_search", 406, b"_format=xml", FORM)
    yield Entry(
        "media/format-json-over-accept-xml",
        "GET",
        "/Task?_format=json",
        200,
        headers={"Accept": "application/fhir+xml"},
    )
    media = {
        "text-plain": "text/plain",
        "xml": "application/fhir+xml",
        "form": "application/x-www-form-urlencoded",
        "multipart": "multipart/form-data; boundary=x",
        "json-in-disguise": "application/jsonx",
        "empty": "",
    }
    for label, ctype in media.items():
        yield Entry(
            f"media/create-as-{label}", "POST", "/Task", 415, SEED_BYTES, {"Content-Type": ctype}
        )
    yield Entry("media/create-without-content-type", "POST", "/Task", 415, SEED_BYTES)
    yield Entry(
        "media/accept-xml-only", "GET", "/Task", 406, headers={"Accept": "application/fhir+xml"}
    )
    yield Entry(
        "media/search-post-as-json", "POST", "/Task/_search", 415, b'{"status": "requested"}', JSON
    )


def huge_searches() -> Iterator[Entry]:
    """Searches past the bounds on values (128 in all, 100 a parameter) and
    ANDed conditions (16), which ran for minutes unbounded; the form takes what no URL holds."""

    def dates(i: int, n: int) -> str:
        return ",".join(f"ap20{10 + (i + j) % 15}-0{1 + j % 9}-1{j % 10}" for j in range(n))

    letters = "abcdefghijklmnopqrstuvwxyz"

    def pairs(i: int, n: int) -> str:
        return ",".join(letters[(i + j) % 26] + letters[(7 * j + i) % 26] for j in range(n))

    shapes: dict[str, list[tuple[str, str]]] = {
        "values-in-all-129": [("_lastUpdated", dates(0, 100)), ("authored-on", dates(1, 29))],
        "contains-in-all-130": [("label:contains", pairs(i, 65)) for i in range(2)],
        "conditions-17": [("label:contains", pairs(i, 1)) for i in range(17)],
        "lastupdated-24x100": [("_lastUpdated", dates(i, 100)) for i in range(24)],
        "authored-on-64x100": [("authored-on", dates(i, 100)) for i in range(64)],
        "label-contains-64x100": [("label:contains", pairs(i, 100)) for i in range(64)],
    }
    for label, shape in shapes.items():
        query = "&".join(f"{quote(n, safe=':_')}={quote(v, safe=',')}" for n, v in shape)
        if len(query) < 7_000:  # within the URL limit: the GET form too
            yield Entry(f"huge-search/get-{label}", "GET", f"/Task?{query}", 400)
        yield Entry(f"huge-search/post-{label}", "POST", "/Task/_search", 400, query.encode(), FORM)


# --- 6. odd search values: long result lists, values that fold to nothing, digits that are
# not ASCII, leap seconds ----------------------------------------------------------------------

MARKS_ONLY: Final = {"acute": "\u0301", "virama": "\u094d", "stacked": "\u0301\u0300\u0327"}
FOLDING_PARAMS: Final = [
    "description",
    "description:contains",
    "label",
    "label:contains",
    "code:text",
    "business-status:text",
    "performer:text",
]
NOT_ASCII_DIGITS: Final = {
    "arabic-indic": "\u0661",
    "fullwidth": "\uff11",
    "superscript": "\u00b2",
    "devanagari": "\u0967",
}


def odd_search_values() -> Iterator[Entry]:
    sortable = ["authored-on", "_lastUpdated", "modified", "due", "status", "_id"]
    thousands = "_sort=" + ",".join((sortable * 400)[:2000])
    yield Entry("odd/sort-2000-keys-form", "POST", "/Task/_search", 400, thousands.encode(), FORM)
    yield Entry("odd/sort-13-keys", "GET", "/Task?_sort=" + ",".join(["status"] * 13), 400)
    both = ",".join([*sortable, *(f"-{k}" for k in sortable)])
    yield Entry("odd/sort-12-keys", "GET", f"/Task?_sort={both}&{NOBODY}", 200, empty_bundle=True)
    yield Entry(
        "odd/sort-canvas-names",
        "GET",
        f"/Task?_sort=due-date,-_id,-due-date&{NOBODY}",
        200,
        empty_bundle=True,
    )
    yield Entry("odd/sort-key-and-its-reverse", "GET", "/Task?_sort=status,-status", 200)
    names = ",".join(f"e{i}" for i in range(2000)).encode()
    yield Entry(
        "odd/elements-2000-names-form", "POST", "/Task/_search", 400, b"_elements=" + names, FORM
    )
    yield Entry("odd/elements-65-names", "GET", "/Task?_elements=" + ",".join(["id"] * 65), 400)
    many = ",".join(["Task:part-of"] * 2000).encode()
    for name in ("_include", "_revinclude"):
        yield Entry(
            f"odd/{name}-2000-values-form",
            "POST",
            "/Task/_search",
            400,
            name.encode() + b"=" + many,
            FORM,
        )
        repeated = "&".join([f"{name}=Task:part-of"] * 5)
        yield Entry(f"odd/{name}-repeated-5-times", "GET", f"/Task?{repeated}", 400)
    for label, marks in MARKS_ONLY.items():
        for param in FOLDING_PARAMS:
            yield Entry(f"odd/{param}-{label}-only", "GET", _query(param, marks), 400)
            yield Entry(
                f"odd/{param}-{label}-in-an-or-list", "GET", _query(param, f"call,{marks}"), 400
            )
        # :exact does not fold: the marks are a value like any other
        for param in ("description:exact", "label:exact"):
            path = f"{_query(param, marks)}&{NOBODY}"
            yield Entry(f"odd/{param}-{label}-only", "GET", path, 200, empty_bundle=True)
    for label, digit in NOT_ASCII_DIGITS.items():
        for param in DATE_PARAMS:
            yield Entry(f"odd/{param}-{label}-year", "GET", _query(param, digit * 4), 400)
            yield Entry(
                f"odd/{param}-{label}-second",
                "GET",
                _query(param, f"ge2024-01-01T10:00:0{digit}Z"),
                400,
            )
        for param in ("_count", "_offset"):
            yield Entry(f"odd/{param}-{label}", "GET", _query(param, digit), 400)
            yield Entry(
                f"odd/{param}-{label}-history",
                "GET",
                f"/Task/{UNKNOWN_ID}/_history?{param}={quote(digit)}",
                400,
            )
        yield Entry(f"odd/vid-{label}", "GET", f"/Task/{UNKNOWN_ID}/_history/{quote(digit)}", 404)
        # a header is sent as UTF-8 here: the digit arrives as two or three Latin-1 characters
        put = {**JSON, "If-Match": f'W/"{digit}"'}
        yield Entry(f"odd/if-match-{label}", "PUT", f"/Task/{UNKNOWN_ID}", 400, SEED_BYTES, put)
    for param in DATE_PARAMS:
        for label, value in {
            "leap-second": "2016-12-31T23:59:60Z",
            "leap-second-fraction": "le2016-12-31T23:59:60.999Z",
            "leap-second-offset": "2016-12-31T18:59:60-05:00",
        }.items():
            path = f"{_query(param, value)}&{NOBODY}"
            yield Entry(f"odd/{param}-{label}", "GET", path, 200, empty_bundle=True)


# --- whitespace in a uri, a code or a literal reference -------------------------------------

# Unicode whitespace that regex dialects disagree on (ECMA-262's \s lacks U+0085, Python's
# ASCII \s has only the first three): FHIR's uri and reference hold none, a code only single
# spaces between words, and the server must refuse each (fhir.resources checks neither)
WHITESPACE_SAMPLES: Final = {
    "space": " ",
    "tab": "\t",
    "newline": "\n",
    "nbsp": "\u00a0",
    "nel": "\u0085",
    "line-separator": "\u2028",
    "ideographic-space": "\u3000",
}


def whitespace_in_uris_and_codes() -> Iterator[Entry]:
    seed_paths: list[tuple[str | int, ...]] = [
        ("extension", 0, "url"),
        ("extension", 0, "valueReference", "reference"),
        ("requester", "reference"),
        ("for", "reference"),
        ("note", 0, "authorReference", "reference"),
    ]
    added: dict[str, tuple[dict[str, Any], tuple[str | int, ...]]] = {
        "implicitRules": ({"implicitRules": "urn:x"}, ("implicitRules",)),
        "meta.source": ({"meta": {"source": "urn:x"}}, ("meta", "source")),
        "identifier.system": ({"identifier": [{"system": "urn:x"}]}, ("identifier", 0, "system")),
        "basedOn.reference": ({"basedOn": [{"reference": "Task/x"}]}, ("basedOn", 0, "reference")),
        "focus.type": ({"focus": {"reference": "Task/x", "type": "Task"}}, ("focus", "type")),
    }
    codes: dict[str, tuple[dict[str, Any], tuple[str | int, ...]]] = {
        "language": ({"language": "en"}, ("language",)),
        "identifier.use": ({"identifier": [{"use": "official"}]}, ("identifier", 0, "use")),
        "input.coding.code": (
            {"input": [{"type": {"coding": [{"code": "x"}]}, "valueString": "v"}]},
            ("input", 0, "type", "coding", 0, "code"),
        ),
    }
    bodies = [(copy.deepcopy(SEED_CREATE), path, "uri") for path in seed_paths]
    for extra, path in added.values():
        bodies.append(({**copy.deepcopy(SEED_CREATE), **extra}, path, "uri"))
    for extra, path in codes.values():
        bodies.append(({**copy.deepcopy(SEED_CREATE), **extra}, path, "code"))
    for base, path, kind in bodies:
        node: Any = base
        for step in path[:-1]:
            node = node[step]
        value = node[path[-1]]
        if kind == "uri":
            node[path[-1]] = ""
            yield _create(f"whitespace/empty-{_label(path)}", _dumps(base))
        for label, char in WHITESPACE_SAMPLES.items():
            if kind == "code" and char == " ":
                node[path[-1]] = f"{value}  {value}"  # two spaces between words
            else:
                node[path[-1]] = f"{value[:4]}{char}{value[4:]}"
            yield _create(f"whitespace/{label}-in-{_label(path)}", _dumps(base))
        node[path[-1]] = value


# --- an update's body: the same reading as a create's (task_rules.parse) ----------------------


def update_bodies() -> Iterator[Entry]:
    """Every hostile create body again as a PUT: an update reads its body through the same
    parser and limits as a create (and as `caretask import` reads a line), before it looks
    the task up, so even an unknown id answers for the body first."""
    for entry in [*malformed_json(), *hostile_values()]:
        assert entry.method == "POST" and entry.body is not None
        yield Entry(
            f"update-body/{entry.name}",
            "PUT",
            f"/Task/{UNKNOWN_ID}",
            entry.expected,
            entry.body,
            entry.headers,
            bug=entry.bug,
            bug_engine=entry.bug_engine,
        )
    yield Entry(
        "update-body/unknown-id-without-if-match",
        "PUT",
        f"/Task/{UNKNOWN_ID}",
        404,
        SEED_BYTES,
        JSON,
    )
    stale = {**JSON, "If-Match": 'W/"0"'}
    yield Entry(
        "update-body/unknown-id-with-version-0",
        "PUT",
        f"/Task/{UNKNOWN_ID}",
        404,
        SEED_BYTES,
        stale,
    )


def if_unmodified_since() -> Iterator[Entry]:
    """Dates an update's If-Unmodified-Since must refuse (400: ignoring one would make the
    update unconditional), before the id is looked up or the body read."""
    values = {
        "iso-8601": "2024-01-01T00:00:00Z",
        "epoch-seconds": "1704067200",
        "no-zone": "Mon, 01 Jan 2024 00:00:00",
        "other-zone": "Mon, 01 Jan 2024 00:00:00 PST",
        "february-31": "Sat, 31 Feb 2024 00:00:00 GMT",
        "hour-25": "Mon, 01 Jan 2024 25:00:00 GMT",
        "year-0": "Mon, 01 Jan 0000 00:00:00 GMT",
        "lower-case": "mon, 01 jan 2024 00:00:00 gmt",
        "sql": "Mon, 01 Jan 2024 00:00:00 GMT' OR '1'='1",
        "rfc850-four-digit-year": "Monday, 01-Jan-2024 00:00:00 GMT",
        **{
            f"digit-{label}": f"Mon, 0{digit} Jan 2024 00:00:00 GMT"
            for label, digit in NOT_ASCII_DIGITS.items()
        },
    }
    for label, value in values.items():
        headers = {**JSON, "If-Unmodified-Since": value}
        yield Entry(
            f"odd/if-unmodified-since-{label}",
            "PUT",
            f"/Task/{UNKNOWN_ID}",
            400,
            SEED_BYTES,
            headers,
        )


def if_none_exist() -> Iterator[Entry]:
    """Conditional creates whose If-None-Exist is not a search that selects tasks (400: a
    condition ignored would make the create unconditional), and valid conditions on bodies
    that are not Tasks (400 before anything is looked up or written)."""
    values = {
        "empty": "",
        "blank": "   ",
        "unknown-parameter": "patinet=123",
        "only-paging": "_count=5&_offset=2",
        "only-format": "_format=json",
        "malformed-date": "authored-on=yesterday",
        "bad-prefix": "due=xx2024",
        "not-utf8": "description=%FF%FE",
        "question-mark-only": "?",
        "other-type": "Patient?identifier=x|1",
    }
    for label, value in values.items():
        headers = {**JSON, "If-None-Exist": value}
        yield Entry(f"odd/if-none-exist-{label}", "POST", "/Task", 400, SEED_BYTES, headers)
    condition = {**JSON, "If-None-Exist": "identifier=urn:hostile|1"}
    yield Entry("odd/if-none-exist-array-body", "POST", "/Task", 400, b"[]", condition)
    yield Entry(
        "odd/if-none-exist-no-status", "POST", "/Task", 400, b'{"resourceType":"Task"}', condition
    )


def _fhirpath(*operations: list[dict[str, Any]]) -> bytes:
    """A FHIRPath Patch: a Parameters of operations, each given as its parts."""
    parameters = [{"name": "operation", "part": parts} for parts in operations]
    return _dumps({"resourceType": "Parameters", "parameter": parameters})


def _fp(kind: str, path: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}, *extra]


def patch_bodies() -> Iterator[Entry]:
    """PATCH bodies, on a Task that does not exist: a patch document is read, and refused
    if it is not one (400), before the Task is looked up; a well-formed one then finds no
    Task (404). Prototype-pollution keys are only data to Python, and FHIR elements no Task
    has: refused by the element-name rule, or well-formed and so a 404 here."""
    target = f"/Task/{UNKNOWN_ID}"

    def patch(name: str, body: bytes, expected: int, headers: dict[str, str] = JSON_PATCH) -> Entry:
        return Entry(f"patch/{name}", "PATCH", target, expected, body, headers)

    nested = {"op": "add", "path": "/x", "value": 1}
    for _ in range(100):
        nested["value"] = [nested["value"]]
    json_patches: dict[str, tuple[Any, int]] = {
        "empty-array-is-well-formed": ([], 404),
        "an-object": ({"op": "remove", "path": "/owner"}, 400),
        "a-string": ("remove /owner", 400),
        "null": (None, 400),
        "op-unknown": ([{"op": "delete", "path": "/owner"}], 400),
        "op-a-number": ([{"op": 1, "path": "/owner"}], 400),
        "op-missing": ([{"path": "/owner"}], 400),
        "path-missing": ([{"op": "remove"}], 400),
        "path-not-a-pointer": ([{"op": "remove", "path": "owner"}], 400),
        "path-bad-escape": ([{"op": "remove", "path": "/owner~2"}], 400),
        "path-a-number": ([{"op": "remove", "path": 1}], 400),
        "add-without-value": ([{"op": "add", "path": "/priority"}], 400),
        "copy-without-from": ([{"op": "copy", "path": "/note/-"}], 400),
        "operation-a-string": (["remove"], 400),
        "201-operations": ([{"op": "test", "path": "/status", "value": "x"}] * 201, 400),
        "value-100-deep": ([nested], 400),
        "proto-key": ([{"op": "add", "path": "/__proto__/polluted", "value": True}], 404),
        "constructor-key": ([{"op": "add", "path": "/constructor/prototype", "value": 1}], 404),
        "nul-in-path": ([{"op": "remove", "path": "/own\u0000er"}], 404),
        "exponential-copies": (
            [{"op": "copy", "from": "/note", "path": "/contained"}]
            + [{"op": "copy", "from": "/contained", "path": "/contained/-"}] * 60,
            404,
        ),
    }
    for name, (body, expected) in json_patches.items():
        yield patch(f"json/{name}", _dumps(body), expected)
    yield patch("json/1-MiB-plus-1", b"[" + b" " * MIB + b"]", 413)
    yield patch("json/empty-body", b"", 400)
    yield patch("json/truncated", b'[{"op": "remove", "path": "/ow', 400)
    yield patch("json/repeated-key", b'[{"op": "remove", "path": "/owner", "path": "/for"}]', 400)
    yield patch("json/1000-deep-arrays", b"[" * 1000 + b"]" * 1000, 400)
    yield patch("json/a-parameters-sent-as-json-patch", _fhirpath(_fp("delete", "Task.owner")), 400)

    def fhirpath(name: str, body: bytes, expected: int) -> Entry:
        return patch(f"fhirpath/{name}", body, expected, JSON)

    deep_parts: dict[str, Any] = {"name": "value", "valueString": "x"}
    for _ in range(60):
        deep_parts = {"name": "value", "part": [deep_parts]}
    fhirpath_bodies: dict[str, tuple[bytes, int]] = {
        "well-formed": (_fhirpath(_fp("delete", "Task.owner")), 404),
        "a-json-patch-sent-as-fhir-json": (_dumps([{"op": "remove", "path": "/owner"}]), 400),
        "a-task": (SEED_BYTES, 400),
        "not-named-operation": (
            _dumps({"resourceType": "Parameters", "parameter": [{"name": "x", "part": []}]}),
            400,
        ),
        "type-unknown": (_fhirpath(_fp("copy", "Task.owner")), 400),
        "type-missing": (_fhirpath([{"name": "path", "valueString": "Task.owner"}]), 400),
        "part-repeated": (
            _fhirpath([*_fp("delete", "Task.owner"), {"name": "path", "valueString": "Task"}]),
            400,
        ),
        "replace-without-value": (_fhirpath(_fp("replace", "Task.status")), 400),
        "path-syntax-error": (_fhirpath(_fp("delete", "Task.(")), 400),
        "path-unclosed-where": (_fhirpath(_fp("delete", "Task.note.where(")), 400),
        "path-lexer-error": (_fhirpath(_fp("delete", "Task.@@@")), 400),
        "path-nul": (_fhirpath(_fp("delete", "Task.own\u0000er")), 400),
        "path-240-nested-parentheses": (_fhirpath(_fp("delete", "(" * 240 + ")" * 240)), 400),
        "path-501-characters": (_fhirpath(_fp("delete", "Task." + "a" * 496)), 400),
        "index-negative": (
            _fhirpath(
                _fp(
                    "insert",
                    "Task.note",
                    {"name": "index", "valueInteger": -1},
                    {"name": "value", "valueAnnotation": {"text": "x"}},
                )
            ),
            400,
        ),
        "index-a-string": (
            _fhirpath(
                _fp(
                    "insert",
                    "Task.note",
                    {"name": "index", "valueString": "0"},
                    {"name": "value", "valueAnnotation": {"text": "x"}},
                )
            ),
            400,
        ),
        "name-proto": (
            _fhirpath(
                _fp(
                    "add",
                    "Task",
                    {"name": "name", "valueString": "__proto__"},
                    {"name": "value", "valueString": "x"},
                )
            ),
            400,
        ),
        "value-with-two-types": (
            _fhirpath(
                _fp(
                    "replace",
                    "Task.status",
                    {"name": "value", "valueCode": "a", "valueString": "b"},
                )
            ),
            400,
        ),
        "value-parts-60-deep": (_fhirpath(_fp("replace", "Task.note", deep_parts)), 400),
        "201-operations": (_fhirpath(*[_fp("delete", "Task.owner")] * 201), 400),
        "function-that-calls-out": (_fhirpath(_fp("delete", "Task.note.resolve()")), 404),
    }
    for name, (body, expected) in fhirpath_bodies.items():
        yield fhirpath(name, body, expected)
    media = {
        "none": {},
        "text-plain": {"Content-Type": "text/plain"},
        "merge-patch": {"Content-Type": "application/merge-patch+json"},
        "xml-patch": {"Content-Type": "application/xml-patch+json"},
        "fhir-xml": {"Content-Type": "application/fhir+xml"},
        "form": FORM,
        "multipart": {"Content-Type": "multipart/form-data; boundary=x"},
        "latin-1-charset": {"Content-Type": "application/json-patch+json; charset=latin-1"},
    }
    for name, headers in media.items():
        yield patch(f"media/{name}", b"[]", 415, headers)
    for name, value in (("if-match", "banana"), ("if-unmodified-since", "yesterday")):
        yield patch(f"header/{name}-malformed", b"[]", 400, {**JSON_PATCH, name: value})
    yield Entry("patch/id-not-an-id", "PATCH", "/Task/..%2F..", 404, b"[]", JSON_PATCH)
    yield Entry(
        "patch/unauthenticated", "PATCH", target, 401, b"[]", JSON_PATCH, authenticated=False
    )


def validate_bodies() -> Iterator[Entry]:
    """POST /Task/$validate: a Task's problems are its answer (200, an OperationOutcome),
    but a body that is not JSON, or too large, or in another media type is refused as on
    every endpoint. Nothing is stored either way."""

    def validate(name: str, body: bytes, expected: int, headers: dict[str, str] = JSON) -> Entry:
        return Entry(f"validate/{name}", "POST", "/Task/$validate", expected, body, headers)

    yield validate("invalid-json", b"{", 400)
    yield validate("empty-body", b"", 400)
    yield validate("repeated-key", b'{"resourceType": "Task", "resourceType": "Task"}', 400)
    yield validate("1-MiB-plus-1", SEED_BYTES + b" " * (MIB + 1 - len(SEED_BYTES)), 413)
    yield validate("text-plain", SEED_BYTES, 415, {"Content-Type": "text/plain"})
    yield validate("parameters-without-resource", b'{"resourceType": "Parameters"}', 400)
    yield validate("a-task-is-validated", SEED_BYTES, 200)
    yield validate("a-patient-gets-its-issues", b'{"resourceType": "Patient"}', 200)
    yield validate(
        "nested-empty-arrays-get-their-issues", _dumps(_with(("note",), [[[[]]]] * 3)), 200
    )
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": deep}
    yield validate("200-deep-gets-its-issues", _dumps(_with(("note", 0, "text"), deep)), 200)
    yield validate("null-json", b"null", 200)
    yield Entry(
        "validate/without-token",
        "POST",
        "/Task/$validate",
        401,
        SEED_BYTES,
        JSON,
        authenticated=False,
    )


def conditional_searches() -> Iterator[Entry]:
    """Conditional patches and deletes whose search selects no tasks (a condition ignored
    would patch or delete by accident): 400 before anything is looked up or written."""
    patch = {"Content-Type": "application/json-patch+json"}
    change = b'[{"op": "replace", "path": "/status", "value": "completed"}]'
    for label, query in {
        "none": "",
        "only-format": "?_format=json",
        "unknown-parameter": "?patinet=123",
        "only-paging": "?_count=1",
        "malformed-date": "?due=tomorrow",
        "not-utf8": "?description=%FF",
        "empty-name": "?=x",
    }.items():
        yield Entry(f"odd/conditional-delete-{label}", "DELETE", f"/Task{query}", 400)
        yield Entry(f"odd/conditional-patch-{label}", "PATCH", f"/Task{query}", 400, change, patch)


def token_throttle_keys() -> Iterator[Entry]:
    """Client ids shaped to collide with or bloat the token throttle's keys: refused as any
    unknown client, each costing its address one check."""
    import base64

    forged = quote("127.0.0.2 ct_000000000000000000000000", safe="")
    yield Entry(
        "token-throttle/client-id-naming-another-address",
        "POST",
        "/auth/token/",
        401,
        f"grant_type=client_credentials&client_id={forged}&client_secret=x".encode(),
        FORM,
        authenticated=False,
    )
    basic = base64.b64encode(b"c" * 10_000 + b":x").decode()
    yield Entry(
        "token-throttle/10-KB-client-id-in-basic",
        "POST",
        "/auth/token/",
        401,
        b"grant_type=client_credentials",
        {**FORM, "Authorization": f"Basic {basic}"},
        authenticated=False,
    )


def content_encodings() -> Iterator[Entry]:
    """A body in a content coding, on every endpoint that reads a body:
    415 with Accept-Encoding: identity, before the body is read as JSON or a form; identity
    alone is the body as it is."""
    token_form = b"grant_type=client_credentials&client_id=x&client_secret=y"
    targets = [
        ("create", "POST", "/Task", SEED_BYTES, JSON),
        ("update", "PUT", f"/Task/{UNKNOWN_ID}", SEED_BYTES, JSON),
        ("patch", "PATCH", f"/Task/{UNKNOWN_ID}", b"[]", JSON_PATCH),
        ("validate", "POST", "/Task/$validate", SEED_BYTES, JSON),
        ("form-search", "POST", "/Task/_search", f"_id={UNKNOWN_ID}".encode(), FORM),
        ("token", "POST", "/auth/token/", token_form, FORM),
    ]
    codings = ["gzip", "br", "deflate", "compress", "gzip, identity", "x-unknown"]
    for label, method, path, body, media in targets:
        unauthenticated = path.startswith("/auth/")
        for coding in codings:
            encoded = gzip.compress(body) if coding.startswith("gzip") else body
            yield Entry(
                f"content-encoding/{label}-{coding.replace(', ', '-and-')}",
                method,
                path,
                415,
                encoded,
                {**media, "Content-Encoding": coding},
                authenticated=not unauthenticated,
            )
    identity = {"Content-Encoding": "identity"}
    yield Entry(
        "content-encoding/update-identity-reaches-the-lookup",
        "PUT",
        f"/Task/{UNKNOWN_ID}",
        404,
        SEED_BYTES,
        {**JSON, **identity},
    )
    yield Entry(
        "content-encoding/form-search-identity-is-searched",
        "POST",
        "/Task/_search",
        200,
        f"_id={UNKNOWN_ID}".encode(),
        {**FORM, **identity},
        empty_bundle=True,
    )
    yield Entry(
        "content-encoding/token-identity-checks-the-client",
        "POST",
        "/auth/token/",
        401,
        token_form,
        {**FORM, **identity},
        authenticated=False,
    )


def hosts() -> Iterator[Entry]:
    """Host headers: only `name[:port]` or `[IPv6][:port]` naming an
    allowed host is answered; forged hosts, userinfo, paths, a second Host, an empty one and
    IPv6 forms that are not an allowed address get the same 400, before authentication."""
    refused = [
        ("forged", "evil.example"),
        ("forged-with-port", "evil.example:80"),
        ("allowed-name-as-prefix", "127.0.0.1.evil.example"),
        ("userinfo-after-port-colon", "localhost:@evil.example"),
        ("userinfo-after-name", "localhost@evil.example"),
        ("userinfo-before-name", "user@localhost"),
        ("userinfo-after-ipv6", "[::1]@evil.example"),
        ("userinfo-after-ipv6-port", "[::1]:8000@evil.example"),
        ("two-ports", "127.0.0.1:80:81"),
        ("port-not-digits", "localhost:80x"),
        ("empty-port", "localhost:"),
        ("path", "localhost/evil"),
        ("path-after-port", "localhost:8000/evil"),
        ("query", "localhost?evil"),
        ("empty", ""),
        ("ipv6-unbracketed", "::1"),
        ("ipv6-unclosed", "[::1"),
        ("ipv6-with-zone", "[fe80::1%25eth0]"),
        ("ipv6-not-allowed", "[2001:db8::1]"),
        ("ipv6-mapped-forged", "[::ffff:203.0.113.7]"),
    ]
    for label, host in refused:
        yield Entry(f"host/{label}", "POST", "/Task", 400, SEED_BYTES, {**JSON, "Host": host})
    yield Entry(
        "host/forged-without-token",
        "GET",
        "/metadata",
        400,
        headers={"Host": "evil.example"},
        authenticated=False,
    )
    yield _raw(
        "host/two-host-headers",
        b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
        400,
    )
    yield _raw(
        "host/two-equal-host-headers",
        b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n",
        400,
    )
    for host in ["localhost", "LocalHost:8000", "127.0.0.1", "127.0.0.1:1", "[::1]", "[::1]:8000"]:
        yield Entry(
            f"host/loopback-{host}-is-served",
            "GET",
            "/metadata",
            200,
            headers={"Host": host},
            authenticated=False,
        )


def _bundle_entry(name: str, body: Any, expected: int, **kwargs: Any) -> Entry:
    raw = body if isinstance(body, bytes) else _dumps(body)
    return Entry(f"bundle/{name}", "POST", "/", expected, raw, JSON, **kwargs)


def _transaction(*entries: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _seed_post(url: str = "Task", **request: Any) -> dict[str, Any]:
    return {"resource": SEED_CREATE, "request": {"method": "POST", "url": url, **request}}


def bundles() -> Iterator[Entry]:
    """Hostile Bundles at POST /: a transaction refused whole (4xx naming the entry) for
    any bad entry, before anything is written; a batch answered 200 with each bad entry
    refused in its place. Never a 5xx."""
    yield _bundle_entry("not-json", b"{", 400)
    yield _bundle_entry("empty", b"", 400)
    yield _bundle_entry("a-json-array", [], 400)
    yield _bundle_entry("a-task", SEED_CREATE, 400)
    for kind in ("searchset", "collection", "document", "message", "history", None, 7, ""):
        body = {"resourceType": "Bundle", "type": kind, "entry": [_seed_post()]}
        yield _bundle_entry(f"type-{kind}", body, 400)
    for name, entries in {
        "entry-an-object": {"request": {}},
        "entry-a-string": "entries",
        "entry-null": None,
    }.items():
        body = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        yield _bundle_entry(name, body, 400)  # null is no FHIR JSON value either
    yield _bundle_entry("ten-thousand-entries", _transaction(*[_seed_post()] * 10_000), 413)
    nested = {"resourceType": "Bundle", "type": "transaction", "entry": [_seed_post()]}
    yield _bundle_entry(
        "nested-bundle-as-resource",
        _transaction({"resource": nested, "request": {"method": "POST", "url": "Task"}}),
        400,
    )
    yield _bundle_entry(
        "nested-bundle-posted-to-root",
        _transaction({"resource": nested, "request": {"method": "POST", "url": ""}}),
        400,
    )
    bad_requests: dict[str, Any] = {
        "dot-dot-to-metadata": {"method": "GET", "url": "Task/../metadata"},
        "dot-dot-post": {"method": "POST", "url": "Task/../Task"},
        "encoded-dot-dot": {"method": "GET", "url": "Task/%2e%2e/metadata"},
        "other-server": {"method": "POST", "url": "https://evil.example/fhir/Task"},
        "other-scheme": {"method": "GET", "url": "file:///etc/passwd"},
        "urn-url": {"method": "PUT", "url": "urn:uuid:0b5e3c1e-6f0e-4d8e-9a43-3f8d2a9c7e11"},
        "other-resource": {"method": "POST", "url": "Patient"},
        "metadata": {"method": "GET", "url": "metadata"},
        "root": {"method": "POST", "url": "/"},
        "empty-url": {"method": "POST", "url": ""},
        "url-a-number": {"method": "POST", "url": 7},
        "no-url": {"method": "POST"},
        "no-method": {"url": "Task"},
        "lower-case-method": {"method": "post", "url": "Task"},
        "method-trace": {"method": "TRACE", "url": "Task"},
        "method-head": {"method": "HEAD", "url": "Task"},
        "post-with-id": {"method": "POST", "url": f"Task/{UNKNOWN_ID}"},
        "put-without-id-or-search": {"method": "PUT", "url": "Task"},
        "if-none-exist-empty": {"method": "POST", "url": "Task", "ifNoneExist": ""},
        "if-none-exist-unknown": {"method": "POST", "url": "Task", "ifNoneExist": "patinet=1"},
        "if-none-exist-an-object": {"method": "POST", "url": "Task", "ifNoneExist": {}},
        "if-match-on-post": {"method": "POST", "url": "Task", "ifMatch": 'W/"1"'},
        "history-of-nothing": {"method": "GET", "url": "Task/_history/_history/1/2"},
    }
    for name, request in bad_requests.items():
        entry = {"resource": SEED_CREATE, "request": request}
        yield _bundle_entry(f"request-{name}", _transaction(entry), 400)
    yield _bundle_entry("missing-request", _transaction({"resource": SEED_CREATE}), 400)
    yield _bundle_entry("request-a-list", _transaction({"request": []}), 400)
    yield _bundle_entry(
        "post-without-resource", _transaction({"request": {"method": "POST", "url": "Task"}}), 400
    )
    yield _bundle_entry(
        "resource-not-a-task",
        _transaction({**_seed_post(), "resource": {"resourceType": "Patient"}}),
        400,
    )
    yield _bundle_entry(
        "unknown-task-update",
        _transaction(
            {"resource": SEED_CREATE, "request": {"method": "PUT", "url": f"Task/{UNKNOWN_ID}"}}
        ),
        404,
    )
    yield _bundle_entry(
        "unresolvable-urn-reference",
        _transaction(
            {
                "resource": {**SEED_CREATE, "partOf": [{"reference": "urn:uuid:nowhere"}]},
                "request": {"method": "POST", "url": "Task"},
            }
        ),
        400,
    )
    same = "urn:uuid:0b5e3c1e-6f0e-4d8e-9a43-3f8d2a9c7e11"
    yield _bundle_entry(
        "repeated-full-url",
        _transaction({**_seed_post(), "fullUrl": same}, {**_seed_post(), "fullUrl": same}),
        400,
    )
    yield _bundle_entry(
        "valid-entries-then-a-bad-one",
        _transaction(_seed_post(), _seed_post(), {"request": {"method": "GET", "url": "Nope"}}),
        400,
    )
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Task/../metadata"}},
            {"request": {"method": "POST", "url": "https://evil.example/Task"}},
            {"resource": {"resourceType": "Bundle"}, "request": {"method": "POST", "url": "Task"}},
            "not-an-entry",
        ],
    }
    yield _bundle_entry("batch-of-bad-entries", batch, 200)


def _claim_parameters(*parameters: dict[str, Any]) -> bytes:
    return _dumps({"resourceType": "Parameters", "parameter": list(parameters)})


def _criteria(text: str) -> dict[str, Any]:
    return {"name": "criteria", "valueString": text}


_CLAIM_OWNER: Final = {"name": "owner", "valueReference": {"reference": "Practitioner/hostile"}}


def claims() -> Iterator[Entry]:
    """$claim, $release and $claim-next (issue 17) with bodies that are no claim, owners
    that are no Practitioner and criteria that are no search; none may change a task (the
    claims name an unknown task, and the criteria a patient no test uses)."""
    claim, release = f"/Task/{UNKNOWN_ID}/$claim", f"/Task/{UNKNOWN_ID}/$release"
    for name, body in {
        "not-json": b'{"resourceType": "Parameters",',
        "a-task": SEED_BYTES,
        "parameter-object": _dumps({"resourceType": "Parameters", "parameter": {"name": "x"}}),
        "owner-traversal": _claim_parameters(
            {"name": "owner", "valueReference": {"reference": "Practitioner/../../etc/passwd"}}
        ),
        "owner-injection": _claim_parameters(
            {"name": "owner", "valueReference": {"reference": "Practitioner/1' OR '1'='1"}}
        ),
        "owner-as-number": _claim_parameters({"name": "owner", "valueInteger": 1}),
        "owner-nul": _claim_parameters(
            {"name": "owner", "valueReference": {"reference": "Practitioner/a\u0000b"}}
        ),
        "deep": _dumps({"resourceType": "Parameters", "parameter": [_nested_parameter(60)]}),
    }.items():
        yield Entry(f"claim-{name}", "POST", claim, 400, body, dict(JSON))
    yield Entry(
        "release-with-a-parameter",
        "POST",
        release,
        400,
        _claim_parameters(_CLAIM_OWNER),
        dict(JSON),
    )
    yield Entry("claim-query-parameter", "POST", claim + "?owner=Practitioner/1", 400)
    yield Entry(
        "claim-unknown-task", "POST", claim, 404, _claim_parameters(_CLAIM_OWNER), dict(JSON)
    )
    nobody = "patient=Patient/0b5e3c1e-hostile"
    for name, (criteria, expected) in {
        "sql": (f"{nobody}&description=x');DROP TABLE tasks;--", 404),
        "nul": (f"{nobody}&status=requested\u0000", 400),
        "bad-utf8": (f"{nobody}&description=%ff%fe", 400),
        "unknown-parameter": (f"{nobody}&colour=red", 400),
        "bad-date": (f"{nobody}&due=lt2024-13-45", 400),
        "bad-sort": (f"{nobody}&_sort=colour", 400),
        "include": (f"{nobody}&_include=Task:colour", 400),
        "many-values": (f"{nobody}&status=" + ",".join(["requested"] * 5000), 400),
    }.items():
        body = _claim_parameters(_criteria(criteria), _CLAIM_OWNER)
        yield Entry(f"claim-next-{name}", "POST", "/Task/$claim-next", expected, body, dict(JSON))
    yield Entry(
        "claim-next-criteria-as-number",
        "POST",
        "/Task/$claim-next",
        400,
        _claim_parameters({"name": "criteria", "valueInteger": 1}, _CLAIM_OWNER),
        dict(JSON),
    )


def _nested_parameter(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"name": "x", "valueString": "x"}
    for _ in range(levels):
        node = {"name": "x", "part": [node]}
    return node


def build() -> list[Entry]:
    entries = [
        *malformed_json(),
        *wrong_types(),
        *hostile_values(),
        *injections(),
        *paths_and_ids(),
        *paging_and_parameters(),
        *change_feed(),
        *transport(),
        *malformed_http(),
        *head_sizes(),
        *chunk_framing(),
        *auth(),
        *sign_in(),
        *methods_and_media(),
        *huge_searches(),
        *odd_search_values(),
        *update_bodies(),
        *if_unmodified_since(),
        *if_none_exist(),
        *conditional_searches(),
        *patch_bodies(),
        *validate_bodies(),
        *token_throttle_keys(),
        *whitespace_in_uris_and_codes(),
        *content_encodings(),
        *hosts(),
        *bundles(),
        *claims(),
    ]
    names = [entry.name for entry in entries]
    assert len(names) == len(set(names)), "corpus entry names must be unique"
    return entries


CORPUS: Final[list[Entry]] = build()


# --- subscriptions: bodies and endpoints a Subscription create must refuse ----------------

_SUB_TOPIC = "http://caretask.dev/fhir/SubscriptionTopic/task-changed"


def _subscription(endpoint: Any = "https://hooks.example.org/h", **changes: Any) -> bytes:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "hostile",
        "criteria": _SUB_TOPIC,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
    }
    body.update(changes)
    return _dumps(body)


def subscription_corpus() -> Iterator[Entry]:
    """Creates of Subscriptions on a server with no endpoint allowlist (only https:// on
    public addresses): requests that would turn it against its own network, and bodies that
    are no Subscription. None may store anything."""
    # endpoints that point inward, or are no web address at all (SSRF): 422
    for name, endpoint in {
        "plain-http": "http://hooks.example.org/h",
        "loopback-v4": "https://127.0.0.1/h",
        "loopback-name": "https://localhost/h",
        "loopback-v6": "https://[::1]/h",
        "metadata-service": "https://169.254.169.254/latest/meta-data/",
        "private-10": "https://10.1.2.3/h",
        "private-192": "https://192.168.0.1/h",
        "unspecified": "https://0.0.0.0/h",
        "v4-mapped-v6": "https://[::ffff:127.0.0.1]/h",
        "userinfo": "https://user:pass@127.0.0.1/h",
        "file": "file:///etc/passwd",
        "gopher": "gopher://127.0.0.1:25/",
        "no-host": "https:///h",
    }.items():
        yield Entry(
            f"subscription-endpoint-{name}",
            "POST",
            "/Subscription",
            422,
            _subscription(endpoint),
            dict(JSON),
        )
    # header injection: a channel header that would smuggle another
    yield Entry(
        "subscription-header-crlf",
        "POST",
        "/Subscription",
        422,
        _subscription(
            channel={
                "type": "rest-hook",
                "endpoint": "https://hooks.example.org/h",
                "header": ["X-A: b\r\nX-B: c"],
            }
        ),
        dict(JSON),
    )
    # not a Subscription: 400
    for name, body in {
        "status-number": _subscription(status=1),
        "reason-array": _subscription(reason=["x"]),
        "criteria-object": _subscription(criteria={"a": 1}),
        "channel-string": _subscription(channel="rest-hook"),
        "endpoint-number": _subscription(endpoint=5),
        "status-error": _subscription(status="error"),
        "unknown-element": _subscription(colour="red"),
        "task-instead": SEED_BYTES,
        "deep": _subscription(extension=[_deep(40)]),
        "repeated-key": b'{"resourceType":"Subscription","status":"off","status":"requested"}',
        "not-json": b'{"resourceType": "Subscription",',
    }.items():
        yield Entry(f"subscription-{name}", "POST", "/Subscription", 400, body, dict(JSON))
    yield Entry(
        "subscription-filter-sql",
        "POST",
        "/Subscription",
        400,
        _subscription(
            _criteria={
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                        "backport-filter-criteria",
                        "valueString": "Task?status=requested');DROP TABLE tasks;--",
                    }
                ]
            }
        ),
        dict(JSON),
    )


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"url": "http://x", "valueString": "x"}
    for _ in range(levels):
        node = {"url": "http://x", "extension": [node]}
    return node


SUBSCRIPTION_CORPUS: Final = tuple(subscription_corpus())
