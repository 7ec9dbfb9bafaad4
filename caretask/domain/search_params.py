"""Search-parameter parsing: query pairs in, a typed SearchQuery out.

A pure function of its input. Anything it cannot understand becomes InvalidSearch that
names the parameter: a silently ignored typo (`patinet=`) would return every patient's
tasks, so unknown parameters are errors unless the client asked for lenient handling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import parse_qsl

from caretask.domain.dates import parse_range
from caretask.domain.errors import InvalidSearch, Issue
from caretask.domain.references import ID_PATTERN, split_reference
from caretask.domain.subsetting import Summary, check_combination, parse_elements, parse_summary
from caretask.domain.task_rules import TASK_INTENT, TASK_PRIORITY, TASK_STATUS
from caretask.domain.text import exact, normalize

DEFAULT_COUNT = 10
MAX_COUNT = 100
MAX_OFFSET = 2**31 - 1
# A search's cost is its rows times its values (a value that no index serves is tested on
# every row), and PostgreSQL's planning time grows steeply with ANDed side-table conditions
# (each a semi-join): the bounds keep the worst search a client can write cheap enough to
# share the server on both engines; CARETASK_SEARCH_TIMEOUT stops what still runs too long.
MAX_VALUES = 100  # comma-separated values of one parameter
MAX_CONDITIONS = 16  # ANDed parameters
MAX_TOTAL_VALUES = 128  # values of all the parameters together

ParamType = Literal["token", "string", "reference", "date"]


@dataclass(frozen=True, slots=True)
class ParamDef:
    name: str
    type: ParamType
    description: str
    target: str | None = None  # the one resource type a reference parameter points at
    codes: frozenset[str] | None = None  # closed code set of a token parameter
    system: str | None = None  # the code system of those codes
    sortable: bool = False
    # a token over Codings or Identifiers (system|code values), not a closed code set
    coded: bool = False
    # a coded token over CodeableConcepts, which also supports :text
    has_text: bool = False


PARAMETERS: dict[str, ParamDef] = {
    p.name: p
    for p in (
        ParamDef("_id", "token", "A Canvas-issued unique identifier", sortable=True),
        ParamDef("label", "string", "A human-readable label for the task"),
        ParamDef("owner", "reference", "The owner of the task", target="Practitioner"),
        ParamDef("description", "string", "A description of the task"),
        ParamDef("patient", "reference", "The patient associated with the task", "Patient"),
        ParamDef("requester", "reference", "The requester of the task", "Practitioner"),
        ParamDef(
            "status",
            "token",
            "The status of the task",
            codes=TASK_STATUS,
            system="http://hl7.org/fhir/task-status",
            sortable=True,
        ),
        ParamDef(
            "intent",
            "token",
            "The intent of the task",
            codes=TASK_INTENT,
            system="http://hl7.org/fhir/task-intent",
        ),
        ParamDef("subject", "reference", "The subject (Task.for) of the task"),
        ParamDef("group", "reference", "The team (task-group extension) of the task", "Group"),
        ParamDef("authored-on", "date", "When the task was created", sortable=True),
        ParamDef("due", "date", "The due date (restriction.period.end)", sortable=True),
        ParamDef("_lastUpdated", "date", "When the task last changed", sortable=True),
        ParamDef(
            "priority",
            "token",
            "The priority of the task",
            codes=TASK_PRIORITY,
            system="http://hl7.org/fhir/request-priority",
        ),
        ParamDef("modified", "date", "When the task was last modified", sortable=True),
        ParamDef("period", "date", "When the task is to be executed (executionPeriod)"),
        ParamDef("identifier", "token", "An identifier of the task", coded=True),
        ParamDef("group-identifier", "token", "The task's group identifier", coded=True),
        ParamDef("code", "token", "The kind of task", coded=True, has_text=True),
        ParamDef(
            "business-status", "token", "The task's business status", coded=True, has_text=True
        ),
        ParamDef("performer", "token", "The kind of performer wanted", coded=True, has_text=True),
        ParamDef("focus", "reference", "What the task acts on"),
        ParamDef("based-on", "reference", "The request the task fulfils"),
        ParamDef("part-of", "reference", "The composite task this one is part of", "Task"),
        ParamDef("encounter", "reference", "The encounter of the task", "Encounter"),
    )
}

MODIFIERS: dict[ParamType, frozenset[str]] = {
    "token": frozenset({"missing", "not"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "reference": frozenset({"missing"}),
    "date": frozenset({"missing"}),
}
# in the order FHIR's search page lists them (the error for an unknown prefix shows them)
_PREFIX_ORDER = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
DATE_PREFIXES = frozenset(_PREFIX_ORDER)
RESULT_PARAMETERS = frozenset(
    {"_count", "_offset", "_sort", "_total", "_summary", "_elements", "_format", "_pretty"}
)
# the references between Tasks that _include and _revinclude can follow
INCLUDABLE = frozenset({"part-of", "based-on"})
# values of _include (or _revinclude), repeats included: each includable once in each
# spelling (Task:part-of, Task:part-of:Task); a longer list only repeats itself
MAX_INCLUDE_VALUES = 2 * len(INCLUDABLE)
MAX_INCLUDED = 1_000
# Canvas's names for sort keys that FHIR names otherwise: both are accepted in every profile
SORT_ALIASES = {"due-date": "due"}
# every sortable parameter once in each direction: a longer _sort only repeats itself
MAX_SORT_KEYS = 2 * sum(1 for p in PARAMETERS.values() if p.sortable)


@dataclass(frozen=True, slots=True)
class TokenCondition:
    param: str
    values: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class CodingCondition:
    """system|code values: system None means any system, "" means none; code None any code."""

    param: str
    values: tuple[tuple[str | None, str | None], ...]
    negate: bool = False


StringMode = Literal["prefix", "exact", "contains"]


@dataclass(frozen=True, slots=True)
class StringCondition:
    param: str
    mode: StringMode
    values: tuple[str, ...]  # folded (text.normalize) for prefix and contains, NFC for exact


@dataclass(frozen=True, slots=True)
class ReferenceCondition:
    param: str
    values: tuple[tuple[str | None, str], ...]  # (type or None for any, id)


@dataclass(frozen=True, slots=True)
class DateCondition:
    param: str
    values: tuple[tuple[str, int, int], ...]  # (prefix, low, high) in epoch microseconds


@dataclass(frozen=True, slots=True)
class MissingCondition:
    param: str
    missing: bool


Condition = (
    TokenCondition
    | CodingCondition
    | StringCondition
    | ReferenceCondition
    | DateCondition
    | MissingCondition
)


@dataclass(slots=True)
class SearchQuery:
    conditions: list[Condition] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param, descending)
    total: Literal["accurate", "estimate", "none"] = "accurate"
    summary: Summary = "false"
    elements: tuple[str, ...] | None = None
    # reference parameters whose target Tasks (_include) or source Tasks (_revinclude)
    # are added to the page with search.mode = include
    includes: list[str] = field(default_factory=list)
    revincludes: list[str] = field(default_factory=list)
    # the parameters actually applied, in request order, for the Bundle's links
    applied: list[tuple[str, str]] = field(default_factory=list)

    @property
    def summary_count(self) -> bool:
        """Only the total is asked for (`_summary=count`)."""
        return self.summary == "count"


_COMMA = re.compile(r"(?<!\\),")


def _split_values(raw: str) -> list[str]:
    return [v.replace("\\,", ",") for v in _COMMA.split(raw)]


def _fail(name: str, text: str) -> InvalidSearch:
    return InvalidSearch([Issue("invalid", text)])


def parse_int(name: str, raw: str, high: int = 10**12) -> int:
    """A non-negative integer parameter (`_count`, `_offset`)."""
    if not re.fullmatch(r"[0-9]{1,13}", raw):
        raise _fail(name, f"{name} must be a non-negative integer, got '{raw[:40]}'")
    value = int(raw)
    if value > high:
        raise _fail(name, f"{name} must be at most {high}")
    return value


def _token_value(pdef: ParamDef, name: str, raw: str) -> str:
    system, bar, code = raw.rpartition("|")
    if bar and system and pdef.system and system != pdef.system:
        raise _fail(name, f"{name}: unknown code system '{system[:80]}'")
    if bar and system and not pdef.system:
        raise _fail(name, f"{name} takes plain values, not system|code")
    if not code:
        raise _fail(name, f"{name} needs a code")
    if pdef.codes is not None and code not in pdef.codes:
        raise _fail(name, f"{name}: '{code[:40]}' is not one of " + ", ".join(sorted(pdef.codes)))
    if pdef.name == "_id" and not ID_PATTERN.fullmatch(code):
        raise _fail(name, f"{name}: '{code[:80]}' is not a valid id")
    return code


def _coding_value(name: str, raw: str) -> tuple[str | None, str | None]:
    if "|" not in raw:
        return (None, raw)
    system, _, code = raw.partition("|")
    if not system and not code:
        raise _fail(name, f"{name} needs a system or a code")
    return (system, code or None)


def _reference_value(
    pdef: ParamDef, name: str, raw: str, type_modifier: str | None
) -> tuple[str | None, str]:
    parsed = split_reference(raw)
    if parsed is None:
        if not ID_PATTERN.fullmatch(raw):
            raise _fail(name, f"{name}: '{raw[:80]}' is neither Type/id nor an id")
        return (type_modifier or pdef.target, raw)
    ref_type, ref_id = parsed
    if type_modifier and type_modifier != ref_type:
        raise _fail(name, f"{name}: the value's type {ref_type} contradicts :{type_modifier}")
    return (ref_type, ref_id)


def _date_value(name: str, raw: str) -> tuple[str, int, int]:
    prefix, rest = "eq", raw.replace(" ", "+")  # an unencoded + in a zone arrives as a space
    if raw[:2].isalpha():
        prefix, rest = raw[:2], raw[2:]
        if prefix not in DATE_PREFIXES:
            expected = ", ".join(_PREFIX_ORDER)
            raise _fail(
                name,
                f"{name}: unknown prefix '{prefix}'; a date takes one of {expected}, "
                "or none (eq), before the date",
            )
    bounds = parse_range(rest)
    if bounds is None:
        raise _fail(name, f"{name}: '{rest[:40]}' is not a valid FHIR date or dateTime")
    return (prefix, bounds[0], bounds[1])


def _folded(name: str, values: list[str]) -> tuple[str, ...]:
    """The case- and accent-folded values. One of combining marks only folds to '', which
    would match every string as a prefix or :contains (and left no prefix range at all):
    it is refused, for every parameter and modifier that folds."""
    folded = tuple(normalize(v) for v in values)
    if "" in folded:
        raise _fail(
            name,
            f"{name}: a value of combining marks only is empty once accents are ignored;"
            " use :exact to search for it",
        )
    return folded


def _condition(name: str, raw: str, lenient: bool) -> Condition | None:
    base, _, modifier = name.partition(":")
    pdef = PARAMETERS.get(base)
    if pdef is None:
        if lenient:
            return None
        raise _fail(name, f"unknown search parameter '{name[:80]}'")
    type_modifier = None
    if modifier:
        if pdef.type == "reference" and modifier[:1].isupper() and modifier.isalpha():
            if pdef.target and modifier != pdef.target:
                raise _fail(name, f"{base} can only point at {pdef.target}")
            type_modifier = modifier
        elif modifier == "text" and pdef.has_text:
            pass
        elif modifier not in MODIFIERS[pdef.type]:
            raise _fail(
                name, f"{name[:80]}: modifier ':{modifier[:40]}' is not supported on {base}"
            )
    if raw == "":
        raise _fail(name, f"{name} needs a value")
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _fail(name, f"{name} must be true or false")
        return MissingCondition(base, raw == "true")
    values = _split_values(raw)
    if len(values) > MAX_VALUES:
        raise _fail(name, f"{name} has more than {MAX_VALUES} values")
    if any(v == "" for v in values):
        raise _fail(name, f"{name} has an empty value")
    if pdef.type == "token" and modifier == "text":
        return StringCondition(f"{base}:text", "prefix", _folded(name, values))
    if pdef.coded:
        codings = tuple(_coding_value(name, v) for v in values)
        return CodingCondition(base, codings, negate=modifier == "not")
    if pdef.type == "token":
        codes = tuple(_token_value(pdef, name, v) for v in values)
        return TokenCondition(base, codes, negate=modifier == "not")
    if pdef.type == "string":
        if modifier == "exact":
            return StringCondition(base, "exact", tuple(exact(v) for v in values))
        mode: StringMode = "contains" if modifier == "contains" else "prefix"
        return StringCondition(base, mode, _folded(name, values))
    if pdef.type == "reference":
        refs = tuple(_reference_value(pdef, name, v, type_modifier) for v in values)
        return ReferenceCondition(base, refs)
    return DateCondition(base, tuple(_date_value(name, v) for v in values))


def _result_parameter(query: SearchQuery, name: str, raw: str) -> None:
    if name == "_count":
        query.count = min(parse_int(name, raw), MAX_COUNT)
    elif name == "_offset":
        query.offset = parse_int(name, raw, MAX_OFFSET)
    elif name == "_sort":
        keys = raw.split(",")
        if len(keys) > MAX_SORT_KEYS:
            raise _fail(name, f"_sort takes at most {MAX_SORT_KEYS} keys")
        query.sort = []
        for key in keys:
            descending = key.startswith("-")
            param = key[1:] if descending else key
            param = SORT_ALIASES.get(param, param)
            pdef = PARAMETERS.get(param)
            if pdef is None or not pdef.sortable:
                sortable = ", ".join(p for p, d in PARAMETERS.items() if d.sortable)
                raise _fail(name, f"_sort: cannot sort by '{param[:40]}'; use {sortable}")
            # a repeated key (`status,-status`) can order nothing the first one left tied:
            # the first occurrence, and its direction, wins
            if all(param != p for p, _ in query.sort):
                query.sort.append((param, descending))
    elif name == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise _fail(name, "_total must be none, estimate or accurate")
        query.total = raw  # type: ignore[assignment]
    elif name == "_summary":
        query.summary = parse_summary(raw, search=True)
    elif name == "_elements":
        query.elements = parse_elements(raw)
    # _format and _pretty are the HTTP edge's (http.negotiation, http.pretty): a format it
    # cannot send was refused there (406) before the search was parsed


def _include(query: SearchQuery, name: str, raw: str) -> None:
    """`_include=Task:part-of` (optionally `:Task` as the target type); repeatable."""
    targets = query.includes if name == "_include" else query.revincludes
    values = _split_values(raw)
    earlier = sum(len(_split_values(r)) for n, r in query.applied if n == name)
    if earlier + len(values) > MAX_INCLUDE_VALUES:
        raise _fail(name, f"{name} takes at most {MAX_INCLUDE_VALUES} values")
    for value in values:
        source, _, rest = value.partition(":")
        param, _, target = rest.partition(":")
        if source != "Task" or param not in INCLUDABLE or target not in ("", "Task"):
            allowed = ", ".join(f"Task:{p}" for p in sorted(INCLUDABLE))
            raise _fail(name, f"{name}: '{value[:60]}' is not supported; use {allowed}")
        if param not in targets:
            targets.append(param)


def parse(pairs: list[tuple[str, str]], *, lenient: bool = False) -> SearchQuery:
    """Turn query pairs (in request order) into a SearchQuery, or raise InvalidSearch."""
    query = SearchQuery()
    seen_results: set[str] = set()
    total_values = 0
    for name, raw in pairs:
        if "\x00" in name or "\x00" in raw:  # no engine stores it; PostgreSQL refuses it
            raise _fail(name, "search parameters cannot contain NUL")
        if name in ("_include", "_revinclude"):
            _include(query, name, raw)
            query.applied.append((name, raw))
            continue
        if name in RESULT_PARAMETERS:
            if name in seen_results:
                raise _fail(name, f"{name} may appear only once")
            seen_results.add(name)
            _result_parameter(query, name, raw)
            if name not in ("_count", "_offset"):
                query.applied.append((name, raw))
            continue
        condition = _condition(name, raw, lenient)
        if condition is not None:
            if len(query.conditions) == MAX_CONDITIONS:
                raise _fail(name, f"at most {MAX_CONDITIONS} search conditions are allowed")
            total_values += _value_count(condition)
            if total_values > MAX_TOTAL_VALUES:
                raise _fail(
                    name,
                    f"at most {MAX_TOTAL_VALUES} search values are allowed in all parameters "
                    "together (each comma-separated value counts)",
                )
            query.conditions.append(condition)
            query.applied.append((name, raw))
    check_combination(query.summary, query.elements)
    return query


def matches_only(query: SearchQuery, count: int) -> SearchQuery:
    """The query as a write's search runs it (a conditional interaction's, $claim-next's):
    its first `count` matches in its order, nothing else (no total, includes, subsetting)."""
    return replace(
        query,
        count=count,
        offset=0,
        total="none",
        summary="false",
        elements=None,
        includes=[],
        revincludes=[],
    )


def parse_filter(text: str) -> SearchQuery:
    """A stored Task search expression (what follows `Task?`, percent-encoded as a query
    string) as parse reads it: a subscription's filter."""
    return parse(parse_qsl(text, keep_blank_values=True))


def _value_count(condition: Condition) -> int:
    return 1 if isinstance(condition, MissingCondition) else len(condition.values)
