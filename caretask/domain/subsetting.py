"""Which elements of a Task a client is sent: `_summary` and `_elements` (FHIR R4
search.html#summary and #elements), on search and on read.

The element lists are FHIR's, read from the R4 Task definition as fhir.resources carries it
(each field's `summary_element_property` is the definition's isSummary, its
`element_required` a minimum cardinality of 1), not written out here. Mandatory elements
(`status`, `intent`), `id` and `meta` are always kept: a Task without them is not a valid
Task. Every subset is tagged SUBSETTED in `meta.tag`, as FHIR requires, so that nobody
mistakes it for the whole resource (and updates with it).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fhir.resources.R4B.task import Task as TaskModel

from caretask.domain.errors import InvalidSearch

Summary = Literal["true", "text", "data", "count", "false"]
# in the order FHIR's search page lists them
SUMMARY_VALUES: tuple[Summary, ...] = ("true", "text", "data", "count", "false")
MAX_ELEMENTS = 64  # _elements names: a Task has fewer elements than that
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}

_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")


def _elements_marked(flag: str) -> frozenset[str]:
    """The Task's elements (their JSON names) whose field metadata sets `flag`."""
    names = set()
    for name, field in TaskModel.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get(flag) is True:
            names.add(field.alias or name)
    return frozenset(names)


# elements a Task must have (min 1): kept whatever the client asked for
MANDATORY = _elements_marked("element_required")
ALWAYS_KEPT = frozenset({"resourceType", "id", "meta"}) | MANDATORY
# elements the R4 definition marks isSummary: what _summary=true returns
SUMMARY_ELEMENTS = _elements_marked("summary_element_property") | ALWAYS_KEPT
# what _summary=text returns
TEXT_ELEMENTS = ALWAYS_KEPT | {"text"}


def _fail(text: str) -> InvalidSearch:
    return InvalidSearch.single("invalid", text)


def parse_summary(raw: str, *, search: bool) -> Summary:
    """A `_summary` value; `count` only where there is something to count (a search, a
    task's history)."""
    allowed = SUMMARY_VALUES if search else tuple(v for v in SUMMARY_VALUES if v != "count")
    if raw not in allowed:
        where = "" if search else " here (count is for searches and a Task's history)"
        raise _fail(f"_summary takes {', '.join(allowed)}{where}, not '{raw[:40]}'")
    return raw


def parse_elements(raw: str) -> tuple[str, ...]:
    """`_elements`: comma-separated top-level element names, each kept once."""
    names = raw.split(",")
    if len(names) > MAX_ELEMENTS:
        raise _fail(f"_elements takes at most {MAX_ELEMENTS} element names")
    elements = tuple(dict.fromkeys(e.strip() for e in names if e.strip()))
    if not elements or not all(_ELEMENT.fullmatch(e) for e in elements):
        raise _fail("_elements takes a comma-separated list of element names")
    return elements


def check_combination(summary: Summary, elements: tuple[str, ...] | None) -> None:
    """FHIR leaves a subset by both _summary and _elements undefined: refused, not guessed."""
    if elements is not None and summary in ("true", "text", "data"):
        raise _fail(f"_summary={summary} and _elements cannot be combined; use one of them")


def _keep(resource: dict[str, Any], kept: frozenset[str] | set[str]) -> dict[str, Any]:
    # a primitive's extensions (`_status`) go with it
    return {k: v for k, v in resource.items() if k in kept or (k[:1] == "_" and k[1:] in kept)}


def subset(
    resource: dict[str, Any], summary: Summary = "false", elements: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The resource as `_summary` and `_elements` ask (a new dict; `resource` is untouched),
    tagged SUBSETTED unless it is whole."""
    if elements is not None:
        out = _keep(resource, ALWAYS_KEPT | set(elements))
    elif summary == "true":
        out = _keep(resource, SUMMARY_ELEMENTS)
    elif summary == "text":
        out = _keep(resource, TEXT_ELEMENTS)
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    else:
        return resource
    meta = dict(out.get("meta", {}))
    tags = list(meta.get("tag", ()))
    if SUBSETTED not in tags:
        tags.append(SUBSETTED)
    meta["tag"] = tags
    out["meta"] = meta
    return out


Subset = tuple[Summary, tuple[str, ...] | None]  # what _summary and _elements ask for
WHOLE: Subset = ("false", None)
NAMES = ("_summary", "_elements")


def read_parameters(pairs: list[tuple[str, str]], *, count: bool = False) -> Subset:
    """`_summary` and `_elements` of a query (its other parameters are the caller's
    business); `count`: whether _summary=count is taken (a task's history)."""
    summary: Summary = "false"
    elements = None
    for name, raw in pairs:
        if name == "_summary":
            summary = parse_summary(raw, search=count)
        elif name == "_elements":
            elements = parse_elements(raw)
    check_combination(summary, elements)
    return summary, elements


def subset_pairs(wanted: Subset) -> list[tuple[str, str]]:
    """The query parameters that ask for `wanted` (for paging links)."""
    summary, elements = wanted
    pairs = [] if summary == "false" else [("_summary", summary)]
    return pairs + ([("_elements", ",".join(elements))] if elements else [])
