"""The fast Task check never accepts what the JSON checks or the fhir.resources model refuse."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caretask.bulk.demo import generate
from caretask.domain.task_fast_check import certainly_valid
from caretask.domain.task_rules import TaskModel, _json_issues, _shape_issues
from tests.support.seed import SEED_CREATE

REF = {"reference": "Patient/p1", "type": "Patient", "display": "Pat"}
CONCEPT = {
    "coding": [
        {"system": "urn:s", "version": "1", "code": "c d", "display": "C", "userSelected": True}
    ],
    "text": "t",
}
IDENT = {
    "use": "official",
    "type": CONCEPT,
    "system": "urn:id",
    "value": "X-1",
    "period": {"start": "2024-01-01", "end": "2024-02-01T10:00:00Z"},
    "assigner": {"display": "Clinic", "identifier": {"system": "urn:org", "value": "O"}},
}
RICH: dict[str, Any] = {
    "resourceType": "Task",
    "id": "abc-1.2",
    "meta": {
        "versionId": "3",
        "lastUpdated": "2024-05-01T10:00:00.123456+02:00",
        "source": "urn:src",
        "profile": ["http://example.org/p"],
        "security": [{"code": "R"}],
        "tag": [{"system": "urn:t", "code": "x"}],
    },
    "implicitRules": "http://rules",
    "language": "en",
    "extension": [
        {"url": "http://e/1", "valueString": "s"},
        {"url": "http://e/2", "valueReference": REF},
        {"url": "http://e/3", "valueBoolean": False},
        {"url": "http://e/4", "valueDateTime": "2024-03-01"},
    ],
    "identifier": [IDENT],
    "instantiatesCanonical": "http://x/ActivityDefinition/1",
    "instantiatesUri": "http://x/1",
    "basedOn": [REF],
    "groupIdentifier": IDENT,
    "partOf": [{"reference": "Task/t1"}],
    "status": "requested",
    "statusReason": CONCEPT,
    "businessStatus": CONCEPT,
    "intent": "order",
    "priority": "urgent",
    "code": CONCEPT,
    "description": "Call the patient",
    "focus": REF,
    "for": REF,
    "encounter": {"reference": "Encounter/e1"},
    "executionPeriod": {"start": "2024-01-01T00:00:00Z"},
    "authoredOn": "2024-01-01T09:30:00-05:00",
    "lastModified": "2024-01-02T09:30:00.5Z",
    "requester": REF,
    "performerType": [CONCEPT],
    "owner": REF,
    "location": REF,
    "reasonCode": CONCEPT,
    "reasonReference": REF,
    "insurance": [REF],
    "note": [
        {"text": "n1", "time": "2024-01-01T10:00:00Z", "authorReference": REF},
        {"text": "n2", "authorString": "Dr X"},
        {"text": "n3"},
    ],
    "relevantHistory": [REF],
    "restriction": {"repetitions": 2, "period": {"end": "2024-08-01"}, "recipient": [REF]},
    "input": [
        {"type": {"text": "label"}, "valueString": "Urgent"},
        {"type": CONCEPT, "valueCodeableConcept": CONCEPT},
        {"type": CONCEPT, "valueIdentifier": IDENT},
        {"type": CONCEPT, "valuePeriod": {"start": "2024-01-01"}},
        {"type": CONCEPT, "valueCoding": {"code": "x"}},
        {"type": CONCEPT, "valueCode": "x"},
    ],
    "output": [{"type": CONCEPT, "valueReference": REF}],
}

TRICKY = [
    "", " ", "a ", " a", "a  b", "a\u00a0b", "\u2028", "tab\there", "line\nbreak", "é",
    "2024", "2024-02", "2024-02-30", "2023-02-29", "2024-02-29", "2024-13-01", "0000-01-01",
    "0999-01-01", "2024-01-01T10:00Z", "2024-01-01T10:00:00", "2024-01-01T24:00:00Z",
    "2024-01-01T23:59:60Z", "2024-01-01T10:00:00+14:00", "2024-01-01T10:00:00+13:59",
    "2024-01-01T10:00:00-00:00", "2024-01-01T10:00:00.1234567Z", "2024-01-01 10:00:00Z",
    "\uff12\uff10\uff12\uff14-01-01", "2024-01-01T10:00:00z",
    "Patient/1", "a" * 65, "a" * 64, "x|y",
    "urn:uuid:1", "has space", "-1", "1.5", 0, 1, -1, 2**31, 2**31 - 1, 1.0, 1.5, True,
    False, [], {}, ["x"], {"x": 1}, [{}], {"url": "u"}, {"reference": 1}, "a\x00b", "\x7f",
    "a\x0bb", "x\x1f", "a\x0cb", "co de", "co\tde", "u r i",
]  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


PATHS = _paths(RICH)
KEYS = sorted({p[-1] for p in PATHS if isinstance(p[-1], str)} | {"contained", "id", "_status"})
values = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=12),
    st.integers(),
    st.lists(st.sampled_from(TRICKY), max_size=2),
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(TRICKY), max_size=2),
)
mutation = st.tuples(
    st.sampled_from(PATHS), st.sampled_from(["replace", "delete", "add"]), values,
    st.sampled_from(KEYS),
)  # fmt: skip


def _apply(body: dict[str, Any], path: tuple[Any, ...], kind: str, value: Any, key: str) -> None:
    parent: Any = body
    for step in path[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    try:
        if kind == "replace":
            parent[last] = value
        elif kind == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][key] = value
    except (KeyError, IndexError, TypeError):
        return


def _model_accepts(body: dict[str, Any]) -> bool:
    try:
        TaskModel.model_validate(body)
    except Exception:
        return False
    return not _json_issues(body) and not list(_shape_issues(body, TaskModel, ()))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4), st.sets(st.sampled_from(sorted(RICH))))
def test_fast_check_never_accepts_a_body_the_model_refuses(
    mutations: list[tuple[Any, ...]], dropped: set[str]
) -> None:
    body = copy.deepcopy(RICH)
    for key in dropped - {"resourceType"}:
        body.pop(key, None)
    for path, kind, value, key in mutations:
        _apply(body, path, kind, value, key)
    if certainly_valid(body):
        assert _model_accepts(body), body


def test_the_rich_task_is_accepted_by_both() -> None:
    assert _model_accepts(RICH)
    assert certainly_valid(RICH)


def test_the_seed_and_demo_tasks_take_the_fast_path() -> None:
    assert certainly_valid({**SEED_CREATE, "intent": "unknown"})
    assert all(certainly_valid(task) for task in generate(300))


def test_unknown_elements_and_primitive_extensions_go_to_the_model() -> None:
    assert not certainly_valid({**RICH, "contained": [{"resourceType": "Patient"}]})
    assert not certainly_valid({**RICH, "_status": {"id": "x"}})
    assert not certainly_valid({**RICH, "madeUp": 1})


def test_a_choice_with_two_values_goes_to_the_model() -> None:
    body = {**RICH, "input": [{"type": CONCEPT, "valueString": "a", "valueBoolean": True}]}
    assert not certainly_valid(body)
    assert not _model_accepts(body)


def test_every_tricky_value_at_every_element_is_judged_no_looser_than_the_model() -> None:
    wrongly_accepted = []
    for path in PATHS:
        for value in TRICKY:
            body = copy.deepcopy(RICH)
            _apply(body, path, "replace", value, "")
            if certainly_valid(body) and not _model_accepts(body):
                wrongly_accepted.append((path, value))
    assert wrongly_accepted == []
