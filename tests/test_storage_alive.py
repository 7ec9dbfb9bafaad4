"""Searches skip deleted tasks (storage.sql_search): the alive term is added only when no
condition of the query excludes a deleted task's row by itself, so that the counts of
the common searches keep their covering indexes."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from caretask.domain import search_params
from caretask.storage.dialect import SQLITE
from caretask.storage.sql_search import ALIVE, select_included, where


@pytest.mark.parametrize(
    "query",
    [
        "",
        "_id=a",
        "status:not=completed",
        "status:missing=false",
        "intent:missing=false",
        "owner:missing=true",
        "label:missing=true",
        "_lastUpdated=ge2020",
        "authored-on=ne2020",
        "code:not=x",
        "priority:not=routine",
    ],
)
def test_conditions_that_match_a_deleted_row_get_the_alive_term(query: str) -> None:
    parsed = search_params.parse(parse_qsl(query))
    assert ALIVE in where(parsed, SQLITE)[0]


@pytest.mark.parametrize(
    "query",
    [
        "status=requested",
        "patient=abc",
        "label=urgent",
        "description=call",
        "description:contains=call",
        "authored-on=ge2020",
        "owner:missing=false",
        "code=x",
        "part-of=Task/abc",
        "_id=a&status=requested",
        "status:not=completed&patient=abc",
    ],
)
def test_conditions_that_exclude_deleted_rows_need_no_alive_term(query: str) -> None:
    parsed = search_params.parse(parse_qsl(query))
    assert ALIVE not in where(parsed, SQLITE)[0]


def test_included_tasks_are_alive() -> None:
    parsed = search_params.parse([("_include", "Task:part-of")])
    assert ALIVE in select_included(parsed, ["a"], "t.id")[0]
