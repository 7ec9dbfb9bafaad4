"""domain.patch as plain functions: a patch document of any shape, applied to the seed Task,
either gives a Task or raises a domain error (a 4xx at the edge), never anything else (a 5xx
is always a bug), and never changes the Task it was given."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caretask.domain.errors import DomainError, InvalidRequest, PatchConflict, Unprocessable
from caretask.domain.patch import JSON_PATCH, apply_patch, read_patch
from tests.support.seed import SEED_CREATE

TASK: dict[str, Any] = {**copy.deepcopy(SEED_CREATE), "id": "abc", "meta": {"versionId": "1"}}
FHIR_JSON = "application/fhir+json"

POINTERS = [
    "",
    "/",
    "/status",
    "/note",
    "/note/0",
    "/note/-",
    "/note/0/text",
    "/note/1",
    "/extension/0/valueReference",
    "/input/0/valueString",
    "/id",
    "/meta/versionId",
    "/restriction/period/end",
    "/owner",
    "/x~1y",
    "/~2",
    "owner",
]
PATHS = [
    "Task",
    "Task.status",
    "Task.note",
    "Task.note[0]",
    "Task.note.text",
    "Task.note.first()",
    "Task.input.value",
    "Task.input[0].type",
    "Task.extension.where(url = 'x')",
    "Task.restriction.period.end",
    "Task.owner",
    "Task.id",
    "Task.descendants()",
    "'literal'",
    "%context",
    "%unknown",
    "Task.(",
    "(((((",
    "Task.note[9]",
    "today()",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
VALUE_KEYS = ["valueString", "valueCode", "valueInteger", "valueAnnotation", "valueReference"]


def _json_operation() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"])},
        optional={
            "path": st.sampled_from(POINTERS),
            "from": st.sampled_from(POINTERS),
            "value": JSON_VALUES,
        },
    )


def _part() -> st.SearchStrategy[Any]:
    names = st.sampled_from(["type", "path", "name", "value", "index", "source", "destination"])
    leaf = st.builds(
        lambda name, key, value: {"name": name, key: value},
        names,
        st.sampled_from(VALUE_KEYS),
        JSON_VALUES,
    )
    typed = st.builds(
        lambda kind: {"name": "type", "valueCode": kind},
        st.sampled_from(["add", "insert", "delete", "replace", "move", "copy"]),
    )
    path = st.builds(lambda p: {"name": "path", "valueString": p}, st.sampled_from(PATHS))
    number = st.builds(
        lambda name, n: {"name": name, "valueInteger": n},
        st.sampled_from(["index", "source", "destination"]),
        st.integers(-1, 3),
    )
    nested = st.builds(
        lambda parts: {"name": "value", "part": parts},
        st.lists(st.fixed_dictionaries({"name": st.text(max_size=6), "valueString": st.text()})),
    )
    return st.one_of(leaf, typed, path, number, nested)


FHIRPATH_PATCHES = st.builds(
    lambda operations: {
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": parts} for parts in operations],
    },
    st.lists(st.lists(_part(), max_size=5), max_size=3),
)


def _outcome(document: Any, media_type: str) -> dict[str, Any] | DomainError:
    before = copy.deepcopy(TASK)
    try:
        result = apply_patch(TASK, read_patch(document, media_type))
    except DomainError as error:
        result = None
        refused: DomainError | None = error
    else:
        refused = None
    assert before == TASK, "the Task given was changed"
    return refused if refused is not None else result  # type: ignore[return-value]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=st.one_of(st.lists(_json_operation(), max_size=4), JSON_VALUES))
def test_any_json_patch_gives_a_task_or_a_domain_error(document: Any) -> None:
    outcome = _outcome(document, JSON_PATCH)
    assert isinstance(outcome, dict | DomainError)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=st.one_of(FHIRPATH_PATCHES, JSON_VALUES))
def test_any_fhirpath_patch_gives_a_task_or_a_domain_error(document: Any) -> None:
    outcome = _outcome(document, FHIR_JSON)
    assert isinstance(outcome, dict | DomainError)


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ([{"op": "test", "path": "/status", "value": "completed"}], PatchConflict),
        ([{"op": "remove", "path": "/priority"}], Unprocessable),
        ([{"op": "remove"}], InvalidRequest),
        ({"op": "remove", "path": "/owner"}, InvalidRequest),
    ],
    ids=["failed-test", "nothing-there", "no-path", "not-an-array"],
)
def test_json_patch_refusals_are_their_domain_errors(document: Any, error: type) -> None:
    assert type(_outcome(document, JSON_PATCH)) is error


def test_a_json_patch_that_empties_a_list_removes_it() -> None:
    patched = _outcome([{"op": "remove", "path": "/note/0"}], JSON_PATCH)
    assert isinstance(patched, dict)
    assert "note" not in patched


def test_a_fhirpath_delete_prunes_the_containers_it_empties() -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "delete"},
                    {"name": "path", "valueString": "Task.restriction.period.end"},
                ],
            }
        ],
    }
    patched = _outcome(parameters, FHIR_JSON)
    assert isinstance(patched, dict)
    assert "restriction" not in patched


def test_nested_parts_are_keyed_and_listed_as_the_element_definition_says() -> None:
    """Task.restriction.recipient repeats and its value is a Reference; repetitions is a
    positiveInt: parts named for them become a list and a number."""
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Task.restriction"},
                    {
                        "name": "value",
                        "part": [
                            {"name": "repetitions", "valuePositiveInt": 2},
                            {"name": "recipient", "valueReference": {"reference": "Patient/1"}},
                        ],
                    },
                ],
            }
        ],
    }
    patched = _outcome(parameters, FHIR_JSON)
    assert isinstance(patched, dict)
    assert patched["restriction"] == {
        "repetitions": 2,
        "recipient": [{"reference": "Patient/1"}],
    }
