"""Endpoints that need no token: capabilities, OpenAPI, SMART discovery and health checks."""

from __future__ import annotations

import asyncio
from functools import lru_cache

import orjson
from starlette.requests import Request
from starlette.responses import Response

from caretask.domain.capability import capability_statement, smart_configuration
from caretask.http.errors import HttpProblem
from caretask.http.openapi import openapi_document
from caretask.http.responses import fhir_response
from caretask.http.state import app_state, opened
from caretask.http.urls import base_url
from caretask.storage.base import StorageUnavailable

# the readiness answer must reach a load balancer within its usual 5 s timeout
READY_SECONDS = 4.5


async def metadata(request: Request) -> Response:
    return fhir_response(capability_statement(base_url(request), app_state(request).started_at))


async def smart(request: Request) -> Response:
    return Response(
        orjson.dumps(smart_configuration(base_url(request))),
        media_type="application/json",
    )


@lru_cache(maxsize=16)
def _openapi_json(base: str) -> bytes:
    """Built once per base URL: the document is some 100 KB and never changes."""
    return orjson.dumps(openapi_document(base))


async def openapi(request: Request) -> Response:
    return Response(_openapi_json(base_url(request)), media_type="application/json")


async def healthz(request: Request) -> Response:
    return fhir_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: the database answers and takes writes (storage.ping), within READY_SECONDS."""
    retry_after = 1
    try:
        await asyncio.wait_for(opened(request).storage.ping(), READY_SECONDS)
    except StorageUnavailable as error:
        text, retry_after = error.text, error.retry_after
    except TimeoutError:
        text = f"the database did not answer within {READY_SECONDS} s"
    except Exception:
        text = "the database is not reachable"
    else:
        return fhir_response({"status": "ready"})
    raise HttpProblem(503, "transient", text, headers={"Retry-After": str(retry_after)})
