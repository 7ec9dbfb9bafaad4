"""Task validation and stamping on their own: no server involved."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from caretask.domain.errors import InvalidResource
from caretask.domain.indexing import extract
from caretask.domain.task_rules import PERMALINK_EXTENSION, stamp, stamp_uses_previous, validate
from tests.support.seed import SEED_CREATE, seed_task


def test_the_seed_create_body_is_valid() -> None:
    assert validate(SEED_CREATE)["intent"] == "unknown"


def test_every_issue_is_reported_at_once() -> None:
    body = {"resourceType": "Task", "status": "nope"}
    with pytest.raises(InvalidResource) as error:
        validate(body)
    expressions = {i.expression for i in error.value.issues}
    assert {"Task.status", "Task.description", "Task.requester"} <= expressions


def test_a_nesting_bomb_is_refused_without_recursion_errors() -> None:
    body: dict = {"resourceType": "Task"}
    node = body
    for _ in range(5000):
        node["extension"] = [{"url": "x"}]
        node = node["extension"][0]
    with pytest.raises(InvalidResource) as error:
        validate(body)
    assert error.value.issues[0].code == "too-costly"


def test_stamp_sets_server_fields_and_drops_client_permalinks() -> None:
    body = {**SEED_CREATE, "extension": [{"url": PERMALINK_EXTENSION, "valueString": "x"}]}
    out = stamp(validate(body), task_id="t1", version_id=3, now="2026-01-01T00:00:00+00:00")
    assert out["id"] == "t1"
    assert out["meta"] == {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00+00:00"}
    assert "extension" not in out


def test_index_reads_the_canvas_elements() -> None:
    index = extract(stamp(validate(SEED_CREATE), task_id="t", version_id=1, now="2026-01-01"))
    assert index.subject_ref == "Patient/5350cd20de8a470aa570a852859ac87e"
    assert index.owner_ref == "Practitioner/3640cd20de8a470aa570a852859ac87e"
    assert index.group_ref == "Group/9bf1d726-8c04-4aed-8b0e-e066f4d54b13"
    assert index.strings == [("label", "urgent", "Urgent")]
    assert index.due_hi - index.due_lo == 999_999  # a time to the second spans that second


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        (lambda b: b.update(authoredOn=1647784800), "Task.authoredOn"),
        (lambda b: b["restriction"]["period"].update(end=42), "Task.restriction.period.end"),
        (lambda b: b["note"][0].update(time=42), "Task.note[0].time"),
        (lambda b: b.update(description=True), "Task.description"),
        (lambda b: b["restriction"].update(repetitions="2"), "Task.restriction.repetitions"),
        (lambda b: b.update(note=42), "Task.note"),
        (lambda b: b.update(extension=42), "Task.extension"),
    ],
    ids=["number-as-datetime", "nested-number-as-datetime", "note-time-number",
         "boolean-as-string", "string-as-integer", "note-not-a-list", "extension-not-a-list"],
)  # fmt: skip
def test_a_json_value_of_the_wrong_type_is_invalid_even_where_the_model_would_coerce_it(
    change: Any, expression: str
) -> None:
    body = copy.deepcopy(SEED_CREATE)
    change(body)
    with pytest.raises(InvalidResource) as raised:
        validate(body)
    assert expression in [issue.expression for issue in raised.value.issues]


@pytest.mark.parametrize(
    ("changes", "uses_previous"),
    [
        ({}, False),
        ({"authoredOn": None}, True),
        ({"note": [{"text": "no time"}]}, True),
        ({"note": None}, False),
    ],
)
def test_stamp_uses_previous_says_exactly_when_the_previous_version_matters(
    changes: dict[str, Any], uses_previous: bool
) -> None:
    body = seed_task(**changes)
    previous = {
        "authoredOn": "2020-01-01T00:00:00Z",
        "note": [{"text": "no time", "time": "2020-01-02T00:00:00Z"}],
    }
    now = "2026-01-01T00:00:00+00:00"
    alone = stamp(validate(body), task_id="t1", version_id=2, now=now)
    over = stamp(validate(body), task_id="t1", version_id=2, now=now, previous=previous)
    assert stamp_uses_previous(validate(body)) is uses_previous
    assert (alone != over) is uses_previous


def test_a_tombstone_is_recognised_as_deleted_and_a_task_is_not() -> None:
    from caretask.domain.task_rules import is_deleted, tombstone

    gone = tombstone("abc", 3, "2026-01-01T00:00:00+00:00")
    assert gone == {
        "resourceType": "Task",
        "id": "abc",
        "meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00+00:00"},
    }
    assert is_deleted(gone)
    assert not is_deleted({**gone, "status": "requested", "intent": "order"})


def test_a_tombstone_indexes_to_no_searchable_value() -> None:
    from caretask.domain.indexing import TaskIndex, extract
    from caretask.domain.task_rules import tombstone

    index = extract(tombstone("abc", 2, "2026-01-01T00:00:00+00:00"))
    assert index == TaskIndex(status="", intent="", description=None, description_norm=None)
