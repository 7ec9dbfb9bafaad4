"""Endpoints that need no token: SMART discovery and health checks (the CapabilityStatement and
the OpenAPI document, derived from the route table, are served by http.routes)."""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response

from caretask.domain.capability import smart_configuration
from caretask.http.errors import HttpProblem
from caretask.http.responses import fhir_response
from caretask.http.state import opened
from caretask.http.urls import base_url
from caretask.storage.base import StorageUnavailable

# the readiness answer must reach a load balancer within its usual 5 s timeout
READY_SECONDS = 4.5


async def smart(request: Request) -> Response:
    return Response(
        orjson.dumps(smart_configuration(base_url(request))),
        media_type="application/json",
    )


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
