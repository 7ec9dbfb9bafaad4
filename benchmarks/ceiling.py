"""The ceiling for `python -m benchmarks.http`: the least an ASGI app can do per request.

A fixed Task for every GET and an empty 201 for every POST (its body read to the end), no
auth, no storage, no framework: run on the same uvicorn stack as `caretask serve`, it
measures what the server, the event loop and the load generator cost on this machine, so
caretask's figures can be quoted as a share of it.
"""

from __future__ import annotations

from typing import Any

import orjson

TASK = orjson.dumps(
    {
        "resourceType": "Task",
        "id": "d6d5b1b2-3c1b-4f9e-9f59-6a3d1b3c4e5f",
        "meta": {"versionId": "1", "lastUpdated": "2026-11-24T00:00:00.000000+00:00"},
        "status": "requested",
        "intent": "unknown",
        "description": "Ask patient for new insurance information.",
        "for": {"reference": "Patient/5350cd20de8a470aa570a852859ac87e"},
        "owner": {"reference": "Practitioner/3640cd20de8a470aa570a852859ac87e"},
        "authoredOn": "2022-03-20T14:00:00.000Z",
    }
)
_GET_HEADERS = [
    (b"content-type", b"application/fhir+json; charset=utf-8"),
    (b"content-length", str(len(TASK)).encode()),
]
_POST_HEADERS = [(b"location", b"http://127.0.0.1/Task/x"), (b"content-length", b"0")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 201, "headers": _POST_HEADERS})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _GET_HEADERS})
    await send({"type": "http.response.body", "body": TASK})
