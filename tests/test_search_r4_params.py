"""SPEC 6: the R4 Task search parameters beyond the seed's (tokens, references, periods)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.clients import task_for
from tests.support.seed import new_patient


def _ids(api: httpx.Client, patient: str, **params: Any) -> set[str]:
    response = api.get("/Task", params={"patient": patient, "_count": 100, **params})
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])}


def _concept(system: str, code: str, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": code}]}
    if text:
        concept["text"] = text
    return concept


def test_priority_matches_the_code(api: httpx.Client) -> None:
    patient = new_patient()
    urgent = task_for(api, patient, priority="urgent")
    task_for(api, patient, priority="routine")
    task_for(api, patient)
    assert _ids(api, patient, priority="urgent") == {urgent}
    assert _ids(api, patient, priority="http://hl7.org/fhir/request-priority|urgent") == {urgent}


def test_priority_outside_its_value_set_is_400(api: httpx.Client) -> None:
    response = api.get("/Task", params={"priority": "whenever"})
    assert response.status_code == 400
    assert "priority" in response.json()["issue"][0]["details"]["text"]


def test_identifier_matches_system_and_value_forms(api: httpx.Client) -> None:
    patient = new_patient()
    with_system = task_for(api, patient, identifier=[{"system": "urn:a", "value": "X1"}])
    without_system = task_for(api, patient, identifier=[{"value": "X1"}])
    other_system = task_for(api, patient, identifier=[{"system": "urn:b", "value": "X1"}])
    assert _ids(api, patient, identifier="X1") == {with_system, without_system, other_system}
    assert _ids(api, patient, identifier="urn:a|X1") == {with_system}
    assert _ids(api, patient, identifier="|X1") == {without_system}
    assert _ids(api, patient, identifier="urn:b|") == {other_system}


def test_identifier_values_are_case_sensitive(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient, identifier=[{"system": "urn:a", "value": "AbC"}])
    assert _ids(api, patient, identifier="abc") == set()


def test_code_matches_any_coding_and_comma_is_or(api: httpx.Client) -> None:
    patient = new_patient()
    review = task_for(api, patient, code=_concept("urn:kinds", "review"))
    call = task_for(api, patient, code=_concept("urn:kinds", "call"))
    task_for(api, patient, code=_concept("urn:kinds", "fax"))
    assert _ids(api, patient, code="review,call") == {review, call}


def test_code_not_excludes_matches_and_keeps_tasks_without_a_code(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient, code=_concept("urn:kinds", "review"))
    call = task_for(api, patient, code=_concept("urn:kinds", "call"))
    bare = task_for(api, patient)
    assert _ids(api, patient, **{"code:not": "review"}) == {call, bare}


def test_code_text_searches_the_concept_text_and_displays(api: httpx.Client) -> None:
    patient = new_patient()
    review = task_for(api, patient, code=_concept("urn:kinds", "rv", text="Review lab results"))
    task_for(api, patient, code=_concept("urn:kinds", "call", text="Call back"))
    assert _ids(api, patient, **{"code:text": "review lab"}) == {review}
    assert _ids(api, patient, **{"code:text": "rv"}) == {review}


def test_business_status_and_performer_match_their_codings(api: httpx.Client) -> None:
    patient = new_patient()
    waiting = task_for(api, patient, businessStatus=_concept("urn:bs", "waiting"))
    nurse = task_for(api, patient, performerType=[_concept("urn:roles", "nurse")])
    assert _ids(api, patient, **{"business-status": "waiting"}) == {waiting}
    assert _ids(api, patient, performer="urn:roles|nurse") == {nurse}


def test_group_identifier_matches(api: httpx.Client) -> None:
    patient = new_patient()
    grouped = task_for(api, patient, groupIdentifier={"system": "urn:req", "value": "G-7"})
    task_for(api, patient)
    assert _ids(api, patient, **{"group-identifier": "urn:req|G-7"}) == {grouped}


def test_part_of_and_based_on_match_typed_and_bare_references(api: httpx.Client) -> None:
    patient = new_patient()
    parent = task_for(api, patient)
    child = task_for(api, patient, partOf=[{"reference": f"Task/{parent}"}])
    based = task_for(api, patient, basedOn=[{"reference": "ServiceRequest/sr-1"}])
    assert _ids(api, patient, **{"part-of": f"Task/{parent}"}) == {child}
    assert _ids(api, patient, **{"part-of": parent}) == {child}
    assert _ids(api, patient, **{"based-on": "ServiceRequest/sr-1"}) == {based}
    assert _ids(api, patient, **{"based-on": "sr-1"}) == {based}


def test_focus_and_encounter_match(api: httpx.Client) -> None:
    patient = new_patient()
    focused = task_for(
        api,
        patient,
        focus={"reference": "DocumentReference/doc-9"},
        encounter={"reference": "Encounter/enc-3"},
    )
    task_for(api, patient)
    assert _ids(api, patient, focus="DocumentReference/doc-9") == {focused}
    assert _ids(api, patient, encounter="enc-3") == {focused}
    assert _ids(api, patient, **{"encounter:missing": "true"}) - {focused} == _ids(api, patient) - {
        focused
    }


def test_missing_on_a_side_table_parameter(api: httpx.Client) -> None:
    patient = new_patient()
    coded = task_for(api, patient, code=_concept("urn:kinds", "review"))
    bare = task_for(api, patient)
    assert _ids(api, patient, **{"code:missing": "true"}) == {bare}
    assert _ids(api, patient, **{"code:missing": "false"}) == {coded}


def test_part_of_a_non_task_finds_nothing(api: httpx.Client) -> None:
    patient = new_patient()
    parent = task_for(api, patient)
    task_for(api, patient, partOf=[{"reference": f"Task/{parent}"}])
    assert _ids(api, patient, **{"part-of": f"Patient/{parent}"}) == set()


@pytest.mark.parametrize(
    ("search", "hit"),
    [
        ("2024-03", True),
        ("2024-03-10", False),
        ("ap2024-03-10", True),
        ("gt2024-03-31", False),
        ("lt2024-03-01", False),
        ("sa2024-02-29", True),
        ("eb2024-04-01", True),
    ],
)
def test_period_searches_the_execution_period_as_a_range(
    api: httpx.Client, search: str, hit: bool
) -> None:
    patient = new_patient()
    task = task_for(api, patient, executionPeriod={"start": "2024-03-05", "end": "2024-03-20"})
    assert _ids(api, patient, period=search) == ({task} if hit else set())


def test_period_with_an_open_end_reaches_forever(api: httpx.Client) -> None:
    patient = new_patient()
    task = task_for(api, patient, executionPeriod={"start": "2024-03-05"})
    assert _ids(api, patient, period="gt2090-01-01") == {task}
    assert _ids(api, patient, period="lt2024-03-01") == set()


def test_modified_searches_and_sorts_by_last_modified(api: httpx.Client) -> None:
    patient = new_patient()
    early = task_for(api, patient, lastModified="2024-01-02T10:00:00Z")
    late = task_for(api, patient, lastModified="2024-06-02T10:00:00+02:00")
    assert _ids(api, patient, modified="ge2024-06") == {late}
    bundle = api.get("/Task", params={"patient": patient, "_sort": "-modified"}).json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [late, early]


@pytest.mark.parametrize(
    ("param", "value"),
    [("identifier", "|"), ("code", ""), ("period", "xx2024"), ("modified", "2024-13")],
)
def test_malformed_values_of_the_new_parameters_are_400_naming_them(
    api: httpx.Client, param: str, value: str
) -> None:
    response = api.get("/Task", params={param: value})
    assert response.status_code == 400
    assert param in response.json()["issue"][0]["details"]["text"]


def _entries(api: httpx.Client, **params: Any) -> list[tuple[str, str]]:
    response = api.get("/Task", params=params)
    assert response.status_code == 200, response.text
    return [(e["resource"]["id"], e["search"]["mode"]) for e in response.json().get("entry", [])]


def test_include_adds_the_parent_task_after_the_matches(api: httpx.Client) -> None:
    patient = new_patient()
    parent = task_for(api, new_patient())
    child = task_for(api, patient, partOf=[{"reference": f"Task/{parent}"}])
    entries = _entries(api, patient=patient, _include="Task:part-of")
    assert entries == [(child, "match"), (parent, "include")]


def test_included_tasks_do_not_count_in_total(api: httpx.Client) -> None:
    patient = new_patient()
    parent = task_for(api, new_patient())
    task_for(api, patient, basedOn=[{"reference": f"Task/{parent}"}])
    bundle = api.get("/Task", params={"patient": patient, "_include": "Task:based-on"}).json()
    assert bundle["total"] == 1
    assert len(bundle["entry"]) == 2


def test_revinclude_adds_the_children_of_the_matches(api: httpx.Client) -> None:
    parent = task_for(api, new_patient())
    first = task_for(api, new_patient(), partOf=[{"reference": f"Task/{parent}"}])
    second = task_for(api, new_patient(), partOf=[{"reference": f"Task/{parent}"}])
    entries = _entries(api, _id=parent, _revinclude="Task:part-of")
    assert entries[0] == (parent, "match")
    assert sorted(entries[1:]) == sorted([(first, "include"), (second, "include")])


def test_a_task_that_matches_is_not_repeated_as_included(api: httpx.Client) -> None:
    patient = new_patient()
    parent = task_for(api, patient)
    child = task_for(api, patient, partOf=[{"reference": f"Task/{parent}"}])
    entries = _entries(api, patient=patient, _include="Task:part-of", _count=10)
    assert sorted(entries) == sorted([(parent, "match"), (child, "match")])


def test_include_of_a_reference_to_another_type_adds_nothing(api: httpx.Client) -> None:
    patient = new_patient()
    task = task_for(api, patient, basedOn=[{"reference": "ServiceRequest/sr-9"}])
    assert _entries(api, patient=patient, _include="Task:based-on") == [(task, "match")]


def test_include_is_kept_in_the_paging_links(api: httpx.Client) -> None:
    patient = new_patient()
    for _ in range(3):
        task_for(api, patient)
    bundle = api.get(
        "/Task", params={"patient": patient, "_include": "Task:part-of", "_count": 1}
    ).json()
    nxt = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    assert "_include=Task%3Apart-of" in nxt or "_include=Task:part-of" in nxt


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("_include", "Task:owner"),
        ("_include", "Patient:link"),
        ("_revinclude", "Task:part-of:Patient"),
        ("_include:iterate", "Task:part-of"),
        ("_include", ""),
    ],
)
def test_unsupported_includes_are_400_naming_them(
    api: httpx.Client, param: str, value: str
) -> None:
    response = api.get("/Task", params={param: value})
    assert response.status_code == 400
    assert param.split(":")[0] in response.json()["issue"][0]["details"]["text"]


@pytest.mark.parametrize(
    ("search", "hit"),
    [("gt2023-12-30", True), ("ge2023-06-01", True), ("ap2023-12-31", True), ("lt2023-01-02", True),
     ("gt2023-12-31", False), ("eb2023-06-01", False)],
)  # fmt: skip
def test_a_year_wide_date_is_found_from_either_end(
    api: httpx.Client, search: str, hit: bool
) -> None:
    patient = new_patient()
    task = task_for(api, patient, authoredOn="2023")
    assert _ids(api, patient, **{"authored-on": search}) == ({task} if hit else set())


def test_a_due_week_finds_narrow_and_wide_dates_alike(api: httpx.Client) -> None:
    patient = new_patient()

    def due(end: str) -> str:
        return task_for(api, patient, restriction={"period": {"end": end}})

    instant, month, year = due("2024-03-05T10:00:00Z"), due("2024-03"), due("2024")
    due("2024-03-12T00:00:00Z")
    due("2023-12-31")
    week = [("due", "ge2024-03-04"), ("due", "lt2024-03-11")]
    assert _ids(api, patient, **{}) >= {instant, month, year}
    response = api.get("/Task", params=[("patient", patient), *week])
    assert {e["resource"]["id"] for e in response.json()["entry"]} == {instant, month, year}
    either = api.get("/Task", params={"patient": patient, "due": "2024-03-05,2023-12-31"})
    assert len(either.json()["entry"]) == 2
