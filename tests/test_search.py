"""SPEC 6: search on the seed's parameters and status, with FHIR semantics and seed paging."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.clients import task_for
from tests.support.seed import label_input, new_patient, seed_task


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def _search(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/Task", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    return response.json()


def test_search_by_id_matches_the_seed_bundle_shape(api: httpx.Client) -> None:
    task_id = task_for(api, new_patient())
    bundle = _search(api, _id=task_id)
    query = f"/Task?_id={task_id}&_count=10&_offset=0"
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert bundle["link"] == [
        {"relation": "self", "url": query},
        {"relation": "first", "url": query},
        {"relation": "last", "url": query},
    ]
    entry = bundle["entry"][0]
    assert entry["fullUrl"].endswith(f"/Task/{task_id}")
    assert entry["fullUrl"].startswith("http://127.0.0.1:")
    assert entry["search"] == {"mode": "match"}
    assert entry["resource"]["id"] == task_id


def test_search_by_patient_accepts_bare_id_and_typed_reference(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient)
    task_for(api, new_patient())
    assert _ids(_search(api, patient=patient)) == [task_id]
    assert _ids(_search(api, patient=f"Patient/{patient}")) == [task_id]
    assert _ids(_search(api, patient=f"Practitioner/{patient}")) == []


def test_search_by_owner_and_requester(api: httpx.Client) -> None:
    patient, owner, requester = new_patient(), new_patient(), new_patient()
    mine = task_for(
        api,
        patient,
        owner={"reference": f"Practitioner/{owner}"},
        requester={"reference": f"Practitioner/{requester}"},
    )
    task_for(api, patient)
    assert _ids(_search(api, owner=owner)) == [mine]
    assert _ids(_search(api, owner=f"Practitioner/{owner}")) == [mine]
    assert _ids(_search(api, requester=requester)) == [mine]
    assert _ids(_search(api, patient=patient, owner=owner)) == [mine]


def test_label_search_is_a_case_insensitive_prefix(api: httpx.Client) -> None:
    patient = new_patient()
    urgent = task_for(api, patient, input=label_input("Urgent"))
    task_for(api, patient, input=label_input("Routine"))
    assert _ids(_search(api, patient=patient, label="urgent")) == [urgent]
    assert _ids(_search(api, patient=patient, label="URG")) == [urgent]
    assert _ids(_search(api, patient=patient, label="gent")) == []


def test_label_exact_and_contains(api: httpx.Client) -> None:
    patient = new_patient()
    urgent = task_for(api, patient, input=label_input("Urgent"))
    assert _ids(_search(api, patient=patient, **{"label:exact": "Urgent"})) == [urgent]
    assert _ids(_search(api, patient=patient, **{"label:exact": "urgent"})) == []
    assert _ids(_search(api, patient=patient, **{"label:contains": "GEN"})) == [urgent]


def test_description_search_ignores_case_and_accents(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient, description="Élan vital: call José")
    assert _ids(_search(api, patient=patient, description="elan")) == [task_id]
    assert _ids(_search(api, patient=patient, description="ÉLAN VITAL")) == [task_id]
    assert _ids(_search(api, patient=patient, description="vital")) == []
    assert _ids(_search(api, patient=patient, **{"description:contains": "jose"})) == [task_id]
    exact = {"description:exact": "Élan vital: call José"}
    assert _ids(_search(api, patient=patient, **exact)) == [task_id]
    assert _ids(_search(api, patient=patient, **{"description:exact": "élan"})) == []


def test_description_search_treats_like_wildcards_literally(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient, description="100% done_now")
    task_for(api, patient, description="1000 done")
    assert _ids(_search(api, patient=patient, description="100%")) == [task_id]
    assert _ids(_search(api, patient=patient, **{"description:contains": "_now"})) == [task_id]
    assert _ids(_search(api, patient=patient, **{"description:contains": "0%"})) == [task_id]


def test_status_search_with_comma_or(api: httpx.Client) -> None:
    patient = new_patient()
    requested = task_for(api, patient, status="requested")
    completed = task_for(api, patient, status="completed")
    task_for(api, patient, status="cancelled")
    assert _ids(_search(api, patient=patient, status="completed")) == [completed]
    both = _search(api, patient=patient, status="requested,completed")
    assert sorted(_ids(both)) == sorted([requested, completed])


def test_status_not_modifier(api: httpx.Client) -> None:
    patient = new_patient()
    requested = task_for(api, patient, status="requested")
    task_for(api, patient, status="completed")
    assert _ids(_search(api, patient=patient, **{"status:not": "completed"})) == [requested]


def test_repeated_parameter_is_and(api: httpx.Client) -> None:
    patient = new_patient()
    both = task_for(api, patient, input=[*label_input("Urgent"), *label_input("Billing")])
    task_for(api, patient, input=label_input("Urgent"))
    params = [("patient", patient), ("label", "urgent"), ("label", "billing")]
    bundle = api.get("/Task", params=params).json()
    assert _ids(bundle) == [both]


def test_comma_escaped_with_backslash_is_part_of_the_value(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient, description="Smith, John")
    assert _ids(_search(api, patient=patient, description="smith\\, john")) == [task_id]


def test_paging_links_and_counts(api: httpx.Client) -> None:
    patient = new_patient()
    created = [task_for(api, patient) for _ in range(5)]
    page = _search(api, patient=patient, _count=2, _offset=2)
    assert page["total"] == 5
    assert _ids(page) == created[2:4]
    links = {link["relation"]: link["url"] for link in page["link"]}
    base = f"/Task?patient={patient}"
    assert links == {
        "self": f"{base}&_count=2&_offset=2",
        "first": f"{base}&_count=2&_offset=0",
        "previous": f"{base}&_count=2&_offset=0",
        "next": f"{base}&_count=2&_offset=4",
        "last": f"{base}&_count=2&_offset=4",
    }


def test_following_next_links_visits_every_match_once(api: httpx.Client) -> None:
    patient = new_patient()
    created = {task_for(api, patient) for _ in range(7)}
    seen: list[str] = []
    url: str | None = f"/Task?patient={patient}&_count=3"
    while url:
        page = api.get(url).json()
        seen += _ids(page)
        url = next((lnk["url"] for lnk in page["link"] if lnk["relation"] == "next"), None)
    assert sorted(seen) == sorted(created)


def test_default_count_is_10(api: httpx.Client) -> None:
    patient = new_patient()
    for _ in range(11):
        task_for(api, patient)
    page = _search(api, patient=patient)
    assert len(page["entry"]) == 10
    assert page["total"] == 11


def test_count_above_100_is_clamped(api: httpx.Client) -> None:
    page = _search(api, _count=1000)
    assert page["link"][0]["url"].endswith("_count=100&_offset=0")
    assert len(page.get("entry", [])) <= 100


def test_count_zero_returns_only_the_total(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient)
    task_for(api, patient)
    page = _search(api, patient=patient, _count=0)
    assert page["total"] == 2
    assert "entry" not in page


def test_order_is_deterministic_across_requests(api: httpx.Client) -> None:
    patient = new_patient()
    for _ in range(4):
        task_for(api, patient)
    first = _ids(_search(api, patient=patient))
    assert first == _ids(_search(api, patient=patient))


def test_sort_by_authored_on_descending_with_id_tiebreak(api: httpx.Client) -> None:
    patient = new_patient()
    old = task_for(api, patient, authoredOn="2020-01-01T00:00:00Z")
    new = task_for(api, patient, authoredOn="2024-01-01T00:00:00Z")
    assert _ids(_search(api, patient=patient, _sort="-authored-on")) == [new, old]
    assert _ids(_search(api, patient=patient, _sort="authored-on")) == [old, new]


def test_unknown_parameter_is_400_naming_it(api: httpx.Client) -> None:
    response = api.get("/Task", params={"patinet": "x"})
    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "patinet" in body["issue"][0]["details"]["text"]


def test_lenient_handling_ignores_unknown_parameters(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient)
    response = api.get(
        "/Task",
        params={"patient": patient, "patinet": "x"},
        headers={"Prefer": "handling=lenient"},
    )
    assert response.status_code == 200
    assert _ids(response.json()) == [task_id]
    assert "patinet" not in response.json()["link"][0]["url"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"_count": "ten"}, "_count"),
        ({"_count": "-1"}, "_count"),
        ({"_offset": "-5"}, "_offset"),
        ({"_offset": "99999999999999"}, "_offset"),
        ({"status": "complete"}, "status"),
        ({"patient": ""}, "patient"),
        ({"_id": "not an id!"}, "_id"),
        ({"description:fuzzy": "x"}, "description:fuzzy"),
        ({"_sort": "owner"}, "_sort"),
        ({"patient": "a,,b"}, "patient"),
    ],
)
def test_malformed_parameter_is_400_naming_it(
    api: httpx.Client, params: dict[str, str], named: str
) -> None:
    response = api.get("/Task", params=params)
    assert response.status_code == 400
    assert named in response.json()["issue"][0]["details"]["text"]


def test_post_search_with_form_body_behaves_like_get(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient)
    response = api.post("/Task/_search", data={"patient": patient, "status": "requested"})
    assert response.status_code == 200
    bundle = response.json()
    assert _ids(bundle) == [task_id]
    assert (
        bundle["link"][0]["url"] == f"/Task?patient={patient}&status=requested&_count=10&_offset=0"
    )


def test_post_search_rejects_unknown_parameters_too(api: httpx.Client) -> None:
    response = api.post("/Task/_search", data={"patinet": "x"})
    assert response.status_code == 400


def test_post_search_needs_a_form_body(api: httpx.Client) -> None:
    response = api.post("/Task/_search", json={"patient": "x"})
    assert response.status_code == 415


def test_search_results_carry_the_permalink(api: httpx.Client) -> None:
    task_id = task_for(api, new_patient())
    resource = _search(api, _id=task_id)["entry"][0]["resource"]
    urls = [e["url"] for e in resource["extension"]]
    assert "http://schemas.canvasmedical.com/fhir/extensions/task-permalink" in urls


def test_search_sees_updates(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient, input=label_input("Urgent"))
    api.put(
        f"/Task/{task_id}",
        json=seed_task(
            for_={"reference": f"Patient/{patient}"}, status="completed", input=label_input("Done")
        ),
    )
    assert _ids(_search(api, patient=patient, label="urgent")) == []
    assert _ids(_search(api, patient=patient, label="done", status="completed")) == [task_id]


def test_search_by_group_and_due_date(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient, restriction={"period": {"end": "2030-05-01T00:00:00Z"}})
    task_for(api, patient, restriction={"period": {"end": "2020-05-01T00:00:00Z"}})
    assert _ids(_search(api, patient=patient, due="ge2030-01")) == [task_id]
    assert _ids(_search(api, patient=patient, due="2030-05")) == [task_id]
    group = "Group/9bf1d726-8c04-4aed-8b0e-e066f4d54b13"
    assert len(_ids(_search(api, patient=patient, group=group))) == 2


def test_summary_count_returns_only_the_total(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient)
    body = _search(api, patient=patient, _summary="count")
    assert body == {"resourceType": "Bundle", "type": "searchset", "total": 1}


def test_total_none_omits_the_count(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient)
    task_for(api, patient)
    body = _search(api, patient=patient, _total="none", _count=1)
    assert "total" not in body
    relations = [link["relation"] for link in body["link"]]
    assert "next" in relations and "last" not in relations


def test_elements_limits_returned_elements_and_marks_subsetted(api: httpx.Client) -> None:
    task_id = task_for(api, new_patient())
    resource = _search(api, _id=task_id, _elements="status")["entry"][0]["resource"]
    # intent too: a mandatory element, always returned (FHIR search.html#elements)
    assert set(resource) == {"resourceType", "id", "meta", "status", "intent"}
    assert resource["meta"]["tag"][0]["code"] == "SUBSETTED"


def test_description_contains_follows_updates(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient, description="Fax the referral letter")
    api.put(
        f"/Task/{task_id}",
        json=seed_task(
            for_={"reference": f"Patient/{patient}"}, description="Mail the discharge summary"
        ),
    )
    assert _ids(_search(api, patient=patient, **{"description:contains": "referral"})) == []
    assert _ids(_search(api, patient=patient, **{"description:contains": "discharge"})) == [task_id]


@pytest.mark.parametrize(
    ("value", "matches"),
    [("9999", True), ("lt9999-12", False), ("ge9999-12-31", True), ("9999-12-31T23:59:59Z", False)],
)
def test_a_date_in_the_last_year_of_the_calendar_is_searched_not_a_500(
    api: httpx.Client, value: str, matches: bool
) -> None:
    """Found by the fuzzer: the end of such a range overflowed Python's datetime."""
    patient = new_patient()
    task_id = task_for(api, patient, authoredOn="9999-12-31T23:00:00Z")
    found = _ids(_search(api, patient=patient, **{"authored-on": value}))
    assert found == ([task_id] if matches else [])


def test_a_date_with_more_than_nine_fraction_digits_is_indexed_and_searchable(
    api: httpx.Client,
) -> None:
    """FHIR puts no limit on the digits; such a Task was stored but missing from searches."""
    patient = new_patient()
    task_id = task_for(api, patient, authoredOn="2024-01-01T10:00:00.1234567890Z")
    assert _ids(_search(api, patient=patient, **{"authored-on": "2024-01-01"})) == [task_id]
    found = _search(api, patient=patient, **{"authored-on": "ge2024-01-01T10:00:00.1234567890Z"})
    assert _ids(found) == [task_id]
