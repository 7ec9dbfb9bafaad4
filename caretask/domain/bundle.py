"""Rendering stored Tasks for clients: the permalink, `_elements`, and Bundles."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from caretask.domain import profiles
from caretask.domain.etag import etag
from caretask.domain.profiles import Profile
from caretask.domain.search_params import SearchQuery
from caretask.domain.subsetting import subset
from caretask.domain.task_rules import PERMALINK_EXTENSION


def permalink(base: str, task_id: str) -> str:
    token = base64.urlsafe_b64encode(f"Task:{task_id}".encode()).decode()
    return f"{base}/permalinks/v1/{token}"


def permalink_task_id(token: str) -> str | None:
    """The task id inside a permalink token, or None when it is not one of ours."""
    try:
        decoded = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError):
        return None
    kind, _, task_id = decoded.partition(":")
    return task_id if kind == "Task" and task_id else None


def render_task(
    resource: dict[str, Any], base: str, profile: Profile = profiles.DEFAULT
) -> dict[str, Any]:
    """The Task as clients see it: the stored resource as the profile shows it
    (profiles.shown), plus its generated permalink."""
    return with_permalink(profiles.shown(resource, profile), base)


def with_permalink(resource: dict[str, Any], base: str) -> dict[str, Any]:
    """The Task with its generated permalink after its own extensions."""
    link = {"url": PERMALINK_EXTENSION, "valueString": permalink(base, resource["id"])}
    return {**resource, "extension": [*resource.get("extension", ()), link]}


def _query_string(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe=':-_')}={quote(v, safe=':/,|-._')}" for k, v in pairs)


def _link(path: str, applied: list[tuple[str, str]], count: int, offset: int) -> str:
    pairs = [*applied, ("_count", str(count)), ("_offset", str(offset))]
    return f"{path}?{_query_string(pairs)}"


def searchset(
    query: SearchQuery,
    total: int | None,
    resources: list[dict[str, Any]],
    *,
    base: str,
    link_path: str,
    has_more: bool = False,
    included: list[dict[str, Any]] | None = None,
    profile: Profile = profiles.DEFAULT,
) -> dict[str, Any]:
    """A searchset Bundle with paging links with _count and _offset: the seed's (relative,
    and none for an empty result) in the canvas profile, absolute in fhir. `link_path` is
    the path of the searched type under the server's root (`<base's path>/Task`).

    `total` is None when the client opted out of counting; `has_more` then says
    whether a next page exists.
    """
    count, offset = query.count, query.offset
    # fhir's links are absolute: generic clients follow no other (canvas's, the seed's, are
    # host-relative)
    if profile == profiles.FHIR:
        link_path = f"{base}/Task"
    links = [{"relation": "self", "url": _link(link_path, query.applied, count, offset)}]
    empty = total == 0 or (total is None and not resources and offset == 0)
    if empty and profile == profiles.CANVAS:
        links = []
    elif count > 0:
        links.append({"relation": "first", "url": _link(link_path, query.applied, count, 0)})
        if offset > 0:
            previous = max(offset - count, 0)
            links.append(
                {"relation": "previous", "url": _link(link_path, query.applied, count, previous)}
            )
        more = has_more if total is None else offset + count < total
        if more:
            links.append(
                {"relation": "next", "url": _link(link_path, query.applied, count, offset + count)}
            )
        if total is not None:
            last = max(total - 1, 0) // count * count
            links.append({"relation": "last", "url": _link(link_path, query.applied, count, last)})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    if links:
        bundle["link"] = links
    entries = []
    for mode, group in (("match", resources), ("include", included or [])):
        for resource in group:
            shown = subset(render_task(resource, base, profile), query.summary, query.elements)
            entries.append(
                {
                    "fullUrl": f"{base}/Task/{resource['id']}",
                    "resource": shown,
                    "search": {"mode": mode},
                }
            )
    if entries:
        bundle["entry"] = entries
    return bundle


def history(
    task_id: str,
    total: int,
    versions: list[dict[str, Any]],
    *,
    base: str,
    link_path: str,
    count: int,
    offset: int,
    profile: Profile = profiles.DEFAULT,
) -> dict[str, Any]:
    """A history Bundle of one Task, newest version first; its links relative (canvas) or
    absolute (fhir) as a searchset's."""
    root = base if profile == profiles.FHIR else link_path
    path = f"{root}/Task/{task_id}/_history"
    links = [{"relation": "self", "url": f"{path}?_count={count}&_offset={offset}"}]
    if count > 0 and offset + count < total:
        links.append({"relation": "next", "url": f"{path}?_count={count}&_offset={offset + count}"})
    if count > 0 and offset > 0:
        prev = max(offset - count, 0)
        links.append({"relation": "previous", "url": f"{path}?_count={count}&_offset={prev}"})
    entries = []
    for resource in versions:
        version = resource["meta"]["versionId"]
        entries.append(
            {
                "fullUrl": f"{base}/Task/{task_id}",
                "resource": render_task(resource, base, profile),
                "request": {
                    "method": "POST" if version == "1" else "PUT",
                    "url": "Task" if version == "1" else f"Task/{task_id}",
                },
                "response": {
                    "status": "201 Created" if version == "1" else "200 OK",
                    "etag": etag(version),
                    "lastModified": resource["meta"]["lastUpdated"],
                },
            }
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": total}
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle
