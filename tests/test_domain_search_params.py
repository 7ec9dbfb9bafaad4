"""The search-parameter parser on its own: a pure function of the query pairs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caretask.domain.errors import InvalidSearch
from caretask.domain.search_params import (
    PARAMETERS,
    DateCondition,
    ReferenceCondition,
    StringCondition,
    TokenCondition,
    parse,
)
from caretask.storage import sql_search
from caretask.storage.dialect import POSTGRESQL, SQLITE


def test_reference_values_become_typed_references() -> None:
    query = parse([("owner", "abc,Practitioner/def")])
    assert query.conditions == [
        ReferenceCondition("owner", (("Practitioner", "abc"), ("Practitioner", "def")))
    ]


def test_absolute_reference_urls_are_understood() -> None:
    query = parse([("patient", "https://x.example/fhir/Patient/p1")])
    assert query.conditions == [ReferenceCondition("patient", (("Patient", "p1"),))]


def test_subject_without_type_matches_any_type() -> None:
    assert parse([("subject", "p1")]).conditions == [ReferenceCondition("subject", ((None, "p1"),))]


def test_string_values_are_normalised_for_prefix_search() -> None:
    query = parse([("description", "ÉLAN")])
    assert query.conditions == [StringCondition("description", "prefix", ("elan",))]


def test_exact_keeps_the_value_as_given() -> None:
    query = parse([("label:exact", "Urgent")])
    assert query.conditions == [StringCondition("label", "exact", ("Urgent",))]


def test_status_accepts_its_code_system() -> None:
    query = parse([("status", "http://hl7.org/fhir/task-status|completed")])
    assert query.conditions == [TokenCondition("status", ("completed",))]


def test_status_rejects_another_code_system() -> None:
    with pytest.raises(InvalidSearch):
        parse([("status", "http://other|completed")])


def test_dates_take_prefixes_and_partial_values() -> None:
    query = parse([("due", "ge2024-03")])
    (condition,) = query.conditions
    assert isinstance(condition, DateCondition)
    prefix, low, high = condition.values[0]
    assert prefix == "ge"
    assert high - low == 31 * 86_400_000_000 - 1


@pytest.mark.parametrize("value", ["xx2024", "2024-13", "2024-02-30", "ge", "tomorrow"])
def test_bad_dates_are_invalid_search(value: str) -> None:
    with pytest.raises(InvalidSearch) as error:
        parse([("authored-on", value)])
    assert "authored-on" in str(error.value)


def test_count_is_clamped_and_offset_read() -> None:
    query = parse([("_count", "500"), ("_offset", "20")])
    assert (query.count, query.offset) == (100, 20)


def test_result_parameters_may_not_repeat() -> None:
    with pytest.raises(InvalidSearch):
        parse([("_count", "5"), ("_count", "6")])


def test_lenient_drops_unknown_parameters_but_not_bad_values() -> None:
    assert parse([("nope", "1")], lenient=True).conditions == []
    with pytest.raises(InvalidSearch):
        parse([("status", "nope")], lenient=True)


def test_applied_parameters_keep_request_order_without_paging() -> None:
    query = parse([("status", "requested"), ("_count", "5"), ("patient", "p")])
    assert query.applied == [("status", "requested"), ("patient", "p")]


_names = st.sampled_from(
    [
        "_id",
        "label",
        "owner",
        "description",
        "patient",
        "requester",
        "status",
        "intent",
        "subject",
        "group",
        "authored-on",
        "due",
        "_lastUpdated",
        "_count",
        "_offset",
        "_sort",
        "_total",
        "_summary",
        "_elements",
        "_format",
        "label:exact",
        "status:not",
        "description:contains",
        "owner:missing",
        "owner:Practitioner",
        "x:y",
        *(name for name in PARAMETERS if name not in ("_id", "label", "owner")),
        "code:text",
        "identifier:not",
        "part-of:Task",
        "_include",
        "_revinclude",
        "_include:iterate",
    ]
) | st.text(max_size=20)
_values = st.sampled_from(
    ["Task:part-of", "Task:based-on:Task", "urn:a|", "|x", "|", "ge2024", "ap2024-02-30",
     "Task/abc", "a,b", "x\\,y", "eb2024-01-01T10:00:00+14:00"]
) | st.text(max_size=40)  # fmt: skip


@given(st.lists(st.tuples(_names, _values), max_size=6), st.booleans())
def test_parse_never_raises_anything_but_invalid_search(
    pairs: list[tuple[str, str]], lenient: bool
) -> None:
    try:
        parse(pairs, lenient=lenient)
    except InvalidSearch as error:
        assert error.issues and all(i.text for i in error.issues)


@settings(deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=6), st.booleans())
def test_every_parsed_query_becomes_sql_with_one_bound_value_per_placeholder(
    pairs: list[tuple[str, str]], sqlite: bool
) -> None:
    try:
        query = parse(pairs, lenient=True)
    except InvalidSearch:
        return
    dialect = SQLITE if sqlite else POSTGRESQL
    every = frozenset(range(len(query.conditions)))
    clause = sql_search.where(query, dialect)
    statements = [
        sql_search.select_page(query, "t.id", clause),
        sql_search.select_page(
            query, "t.id", sql_search.where(query, dialect, every), after_pk=7, offset=3
        ),
        sql_search.select_page(query, "t.id", clause, few=True),
        sql_search.select_count(query, clause),
        *filter(None, [sql_search.date_probe(query, dialect)]),
        sql_search.select_anchors(clause),
        *((sql, params) for _, sql, params in sql_search.side_probes(query, dialect)),
    ]
    for sql, params in statements:
        assert sql.count("?") == len(params), sql


@pytest.mark.parametrize(
    "pairs",
    [
        [("description", "a\x00b")],
        [("label\x00", "x")],
        [("_count", "\u0661\u0660")],  # Arabic-Indic digits: digits to int(), not to FHIR
        [("label", "x")] * 17,
        [("label", ",".join(["x"] * 100)), ("description", ",".join(["x"] * 29))],
    ],
    ids=[
        "nul-in-value",
        "nul-in-name",
        "non-ascii-digits",
        "too-many-conditions",
        "too-many-values-in-all",
    ],
)
def test_hostile_query_shapes_are_a_400(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidSearch):
        parse(pairs)


def test_up_to_16_conditions_are_accepted() -> None:
    assert len(parse([("label", "x")] * 16).conditions) == 16


def test_up_to_128_values_in_all_are_accepted() -> None:
    pairs = [("label", ",".join(["x"] * 100)), ("description", ",".join(["x"] * 28))]
    assert sum(len(c.values) for c in parse(pairs).conditions) == 128
