"""Rendering stored Tasks for clients: the permalink, `_elements`, and Bundles."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from caretask.domain import profiles
from caretask.domain.etag import etag
from caretask.domain.profiles import Profile
from caretask.domain.search_params import SearchQuery
from caretask.domain.subsetting import WHOLE, Subset, subset, subset_pairs
from caretask.domain.task_rules import PERMALINK_EXTENSION, is_deleted


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


def _link(path: str, applied: str, count: int, offset: int) -> str:
    """A paging link; `applied` the search's own parameters, _query_string'd."""
    return f"{path}?{applied}{'&' if applied else ''}_count={count}&_offset={offset}"


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
    applied = _query_string(query.applied)  # once for every link
    links = [{"relation": "self", "url": _link(link_path, applied, count, offset)}]
    empty = total == 0 or (total is None and not resources and offset == 0)
    if empty and profile == profiles.CANVAS:
        links = []
    elif count > 0:
        links.append({"relation": "first", "url": _link(link_path, applied, count, 0)})
        if offset > 0:
            previous = max(offset - count, 0)
            links.append(
                {"relation": "previous", "url": _link(link_path, applied, count, previous)}
            )
        more = has_more if total is None else offset + count < total
        if more:
            links.append(
                {"relation": "next", "url": _link(link_path, applied, count, offset + count)}
            )
        if total is not None:
            last = max(total - 1, 0) // count * count
            links.append({"relation": "last", "url": _link(link_path, applied, count, last)})
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
    wanted: Subset = WHOLE,
) -> dict[str, Any]:
    """A history Bundle of one Task, newest version first, each version subsetted as
    `wanted` (_summary=count: the total alone); its links relative (canvas) or absolute
    (fhir) as a searchset's."""
    if wanted[0] == "count":
        return {"resourceType": "Bundle", "type": "history", "total": total}
    root = base if profile == profiles.FHIR else link_path
    path = f"{root}/Task/{task_id}/_history"
    also = "".join(f"&{name}={quote(value, safe=',')}" for name, value in subset_pairs(wanted))

    def link(relation: str, at: int) -> dict[str, str]:
        return {"relation": relation, "url": f"{path}?_count={count}&_offset={at}{also}"}

    links = [link("self", offset)]
    if count > 0 and offset + count < total:
        links.append(link("next", offset + count))
    if count > 0 and offset > 0:
        links.append(link("previous", max(offset - count, 0)))
    entries = [history_entry(resource, base, profile, wanted) for resource in versions]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": total}
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle


def history_entry(
    resource: dict[str, Any],
    base: str,
    profile: Profile = profiles.DEFAULT,
    wanted: Subset = WHOLE,
) -> dict[str, Any]:
    """A version as a history Bundle's entry: the interaction that stored it (version 1 a
    create, a tombstone a delete, without a resource, any other an update, also one
    that brought a deleted task back) and that interaction's answer."""
    task_id, meta = resource["id"], resource["meta"]
    version = meta["versionId"]
    entry: dict[str, Any] = {"fullUrl": f"{base}/Task/{task_id}"}
    if is_deleted(resource):
        method, url, status = "DELETE", f"Task/{task_id}", "204 No Content"
    else:
        entry["resource"] = subset(render_task(resource, base, profile), *wanted)
        if version == "1":
            method, url, status = "POST", "Task", "201 Created"
        else:
            method, url, status = "PUT", f"Task/{task_id}", "200 OK"
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {
        "status": status,
        "etag": etag(version),
        "lastModified": meta["lastUpdated"],
    }
    return entry


def change_feed(
    versions: list[dict[str, Any]],
    *,
    horizon: str,
    path: str,
    base: str,
    link_path: str,
    applied: list[tuple[str, str]],
    next_cursor: str | None,
    profile: Profile = profiles.DEFAULT,
    wanted: Subset = WHOLE,
) -> dict[str, Any]:
    """A page of the change feed (`path`: /Task/_history or /_history) as a history
    Bundle. meta.lastUpdated is `horizon`, the instant up to which the feed is complete
    (the next poll's _since); `applied` the query's parameters that every page keeps,
    `next_cursor` the next page's, if there is one. Links relative (canvas) or absolute
    (fhir) as a searchset's; no total (it would cost a count of every change)."""
    root = (base if profile == profiles.FHIR else link_path) + path
    links = [{"relation": "self", "url": f"{root}?{_query_string(applied)}"}]
    if next_cursor is not None:
        pairs = [*applied, ("_cursor", next_cursor)]
        links.append({"relation": "next", "url": f"{root}?{_query_string(pairs)}"})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": horizon},
        "type": "history",
        "link": links,
    }
    if versions:
        bundle["entry"] = [history_entry(r, base, profile, wanted) for r in versions]
    return bundle
