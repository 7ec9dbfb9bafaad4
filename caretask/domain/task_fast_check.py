"""A fast, conservative check that a Task body is valid FHIR R4B: a hot path, hand-written.

Validating with the fhir.resources model is slow enough to set the pace of `caretask
import` over a large file. This
module accepts only bodies built from a common subset of Task elements, each checked at
least as strictly as the model checks it (the same patterns, exact JSON types, a narrower
dateTime form). It answers True only when the model would accept the body and
task_rules' JSON checks (nulls, empties, control characters, depth) would find nothing;
anything outside the subset, or in doubt, answers False and the caller runs the full
checks, which also produce the error messages. tests/test_domain_fast_check.py holds it to that.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

# the model's patterns, narrowed to exclude the control characters that task_rules refuses
# before the model runs (so that True here also means: no JSON-level issue either)
_STRING = re.compile(r"(?:[ \r\n\t]|[^\s\x00-\x1f\x7f])+")
_CODE = re.compile(r"[^\s\x00-\x1f\x7f]+( [^\s\x00-\x1f\x7f]+)*")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_URI = re.compile(r"[^\s\x00-\x1f\x7f]+")
# a narrower dateTime than FHIR's: a full date, or date and time to the second with a zone
_DATETIME = re.compile(
    r"([1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9]))?"
)
_MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _string(value: Any) -> bool:
    return type(value) is str and _STRING.fullmatch(value) is not None


def _code(value: Any) -> bool:
    return type(value) is str and _CODE.fullmatch(value) is not None


def _id(value: Any) -> bool:
    return type(value) is str and _ID.fullmatch(value) is not None


def _uri(value: Any) -> bool:
    return type(value) is str and _URI.fullmatch(value) is not None


def _boolean(value: Any) -> bool:
    return type(value) is bool


def _positive_int(value: Any) -> bool:
    return type(value) is int and 0 < value < 2**31


def _date_time(value: Any) -> bool:
    if type(value) is not str:
        return False
    match = _DATETIME.fullmatch(value)
    if match is None:
        return False
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    if day > _MONTH_DAYS[month]:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return not (month == 2 and day == 29 and not leap)


def _instant(value: Any) -> bool:
    return _date_time(value) and "T" in value


def _obj(fields: dict[str, Check], required: tuple[str, ...] = ()) -> Check:
    def check(value: Any) -> bool:
        if type(value) is not dict or not value:
            return False
        for key, item in value.items():
            field = fields.get(key)
            if field is None or not field(item):
                return False
        for key in required:  # noqa: SIM110 (a loop: no generator on the hot path)
            if key not in value:
                return False
        return True

    return check


def _list(item: Check) -> Check:
    def check(value: Any) -> bool:
        if type(value) is not list or not value:
            return False
        for v in value:  # noqa: SIM110 (a loop: no generator on the hot path)
            if not item(v):
                return False
        return True

    return check


def _one_of(
    fields: dict[str, Check], choices: dict[str, Check], required: tuple[str, ...]
) -> Check:
    """An element with a choice type: exactly one of `choices` present."""
    plain = _obj({**fields, **choices}, required)

    def check(value: Any) -> bool:
        return plain(value) and sum(1 for key in choices if key in value) == 1

    return check


# a literal reference is a URL: no whitespace (task_rules holds the slow path to the same)
_REFERENCE_FIELDS: dict[str, Check] = {"reference": _uri, "type": _uri, "display": _string}
_CODING = _obj(
    {
        "system": _uri,
        "version": _string,
        "code": _code,
        "display": _string,
        "userSelected": _boolean,
    }
)
_CODEABLE_CONCEPT = _obj({"coding": _list(_CODING), "text": _string})
_PERIOD = _obj({"start": _date_time, "end": _date_time})
_IDENTIFIER_FIELDS: dict[str, Check] = {
    "use": _code,
    "type": _CODEABLE_CONCEPT,
    "system": _uri,
    "value": _string,
    "period": _PERIOD,
}
_IDENTIFIER = _obj(_IDENTIFIER_FIELDS)
_REFERENCE = _obj({**_REFERENCE_FIELDS, "identifier": _IDENTIFIER})
_IDENTIFIER_WITH_ASSIGNER = _obj({**_IDENTIFIER_FIELDS, "assigner": _REFERENCE})
_ANNOTATION_AUTHOR = {"authorReference": _REFERENCE, "authorString": _string}
_ANNOTATION_PLAIN = _obj({"time": _date_time, "text": _string}, ("text",))


def _annotation(value: Any) -> bool:
    if type(value) is not dict:
        return False
    authors = [key for key in _ANNOTATION_AUTHOR if key in value]
    if len(authors) > 1:
        return False
    if authors:
        author = authors[0]
        rest = {k: v for k, v in value.items() if k != author}
        return _ANNOTATION_AUTHOR[author](value[author]) and _ANNOTATION_PLAIN(rest)
    return _ANNOTATION_PLAIN(value)


_VALUES: dict[str, Check] = {
    "valueString": _string,
    "valueBoolean": _boolean,
    "valueCode": _code,
    "valueDateTime": _date_time,
    "valueReference": _REFERENCE,
    "valueCodeableConcept": _CODEABLE_CONCEPT,
    "valueCoding": _CODING,
    "valueIdentifier": _IDENTIFIER_WITH_ASSIGNER,
    "valuePeriod": _PERIOD,
}
_EXTENSION = _one_of({"url": _uri}, _VALUES, ("url",))
_PARAMETER = _one_of({"type": _CODEABLE_CONCEPT}, _VALUES, ("type",))
_META = _obj(
    {
        "versionId": _id,
        "lastUpdated": _instant,
        "source": _uri,
        "profile": _list(_uri),
        "security": _list(_CODING),
        "tag": _list(_CODING),
    }
)

_TASK = _obj(
    {
        "resourceType": lambda v: v == "Task",
        "id": _id,
        "meta": _META,
        "implicitRules": _uri,
        "language": _code,
        "extension": _list(_EXTENSION),
        "identifier": _list(_IDENTIFIER_WITH_ASSIGNER),
        "instantiatesCanonical": _uri,
        "instantiatesUri": _uri,
        "basedOn": _list(_REFERENCE),
        "groupIdentifier": _IDENTIFIER_WITH_ASSIGNER,
        "partOf": _list(_REFERENCE),
        "status": _code,
        "statusReason": _CODEABLE_CONCEPT,
        "businessStatus": _CODEABLE_CONCEPT,
        "intent": _code,
        "priority": _code,
        "code": _CODEABLE_CONCEPT,
        "description": _string,
        "focus": _REFERENCE,
        "for": _REFERENCE,
        "encounter": _REFERENCE,
        "executionPeriod": _PERIOD,
        "authoredOn": _date_time,
        "lastModified": _date_time,
        "requester": _REFERENCE,
        "performerType": _list(_CODEABLE_CONCEPT),
        "owner": _REFERENCE,
        "location": _REFERENCE,
        "reasonCode": _CODEABLE_CONCEPT,
        "reasonReference": _REFERENCE,
        "insurance": _list(_REFERENCE),
        "note": _list(_annotation),
        "relevantHistory": _list(_REFERENCE),
        "restriction": _obj(
            {"repetitions": _positive_int, "period": _PERIOD, "recipient": _list(_REFERENCE)}
        ),
        "input": _list(_PARAMETER),
        "output": _list(_PARAMETER),
    },
    ("resourceType", "status", "intent"),
)


def certainly_valid(body: Any) -> bool:
    """True only if the JSON checks and fhir.resources' R4B Task model accept `body`."""
    return _TASK(body)
