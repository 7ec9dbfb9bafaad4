"""Search values that are odd but reach the engines.

Sort lists and element lists are bounded; string values that fold to nothing are refused;
a leap second is a moment of its own minute; only ASCII digits are digits; `:exact`
compares the NFC forms of stored and searched strings.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.support.clients import task_for
from tests.support.seed import label_input, new_patient, seed_task


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


def _refused(response: httpx.Response, named: str) -> None:
    """A 400 OperationOutcome whose text names the parameter."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert named in body["issue"][0]["details"]["text"]


# --- _sort and _elements lists --------------------------------------------------------------


def test_sort_with_hundreds_of_keys_is_a_400_naming_sort(api: httpx.Client) -> None:
    keys = ",".join(["authored-on", "-due", "status", "_lastUpdated", "modified"] * 140)
    _refused(api.get("/Task", params={"_sort": keys}), "_sort")


def test_sort_with_thousands_of_keys_in_a_form_is_a_400_naming_sort(api: httpx.Client) -> None:
    keys = ",".join(["status"] * 2000)
    _refused(api.post("/Task/_search", data={"_sort": keys}), "_sort")


def test_sort_key_repeated_counts_once_and_its_first_direction_wins(api: httpx.Client) -> None:
    patient = new_patient()
    early = task_for(api, patient, authoredOn="2024-01-01T10:00:00Z")
    late = task_for(api, patient, authoredOn="2024-06-01T10:00:00Z")
    for keys, order in (
        ("-authored-on,authored-on", [late, early]),
        ("authored-on,-authored-on,authored-on", [early, late]),
        ("status,-authored-on,-status,authored-on", [late, early]),
    ):
        response = api.get("/Task", params={"patient": patient, "_sort": keys})
        assert _ids(response) == order, keys


def test_sort_with_every_key_once_in_both_directions_is_allowed(api: httpx.Client) -> None:
    keys = ["authored-on", "due", "status", "_lastUpdated", "modified"]
    both = ",".join([*keys, *(f"-{k}" for k in keys)])
    patient = new_patient()
    task_id = task_for(api, patient)
    assert _ids(api.get("/Task", params={"patient": patient, "_sort": both})) == [task_id]


def test_elements_with_thousands_of_names_is_a_400_naming_elements(api: httpx.Client) -> None:
    names = ",".join(f"e{i}" for i in range(2000))
    _refused(api.post("/Task/_search", data={"_elements": names}), "_elements")


def test_elements_with_64_names_repeats_included_is_allowed(api: httpx.Client) -> None:
    patient = new_patient()
    task_id = task_for(api, patient)
    names = ",".join(["status", "status", *(f"e{i}" for i in range(62))])
    response = api.post("/Task/_search", data={"patient": patient, "_elements": names})
    assert _ids(response) == [task_id]
    kept = {"resourceType", "id", "meta", "status", "intent"}  # intent: mandatory, always kept
    assert set(response.json()["entry"][0]["resource"]) == kept
    _refused(api.post("/Task/_search", data={"_elements": names + ",e99"}), "_elements")


def test_include_with_more_values_than_it_has_spellings_is_a_400(api: httpx.Client) -> None:
    four = "Task:part-of,Task:part-of:Task,Task:based-on,Task:based-on:Task"
    for name in ("_include", "_revinclude"):
        assert api.get("/Task", params={name: four}).status_code == 200
        _refused(api.get("/Task", params=[(name, four), (name, "Task:part-of")]), name)
        _refused(api.post("/Task/_search", data={name: ",".join(["Task:part-of"] * 2000)}), name)


# --- values that fold to nothing --------------------------------------------------------------

FOLDING = ["description", "label", "code:text", "business-status:text", "performer:text"]
FOLDING_MODIFIED = [*FOLDING, "description:contains", "label:contains"]
MARKS_ONLY = {"acute": "\u0301", "virama": "\u094d", "stacked": "\u0301\u0300\u0327"}


@pytest.mark.parametrize("param", FOLDING_MODIFIED)
@pytest.mark.parametrize("value", list(MARKS_ONLY.values()), ids=list(MARKS_ONLY))
def test_a_value_of_combining_marks_only_is_a_400_naming_the_parameter(
    api: httpx.Client, param: str, value: str
) -> None:
    _refused(api.get(f"/Task?{param}={quote(value)}"), param)


@pytest.mark.parametrize("param", ["description", "description:contains", "code:text"])
def test_one_value_of_combining_marks_in_an_or_list_is_a_400(api: httpx.Client, param: str) -> None:
    _refused(api.get(f"/Task?{param}=referral,{quote(chr(0x301))}"), param)


def test_exact_takes_a_value_of_combining_marks_as_it_is(api: httpx.Client) -> None:
    """:exact does not fold: a description of one combining mark is stored and found."""
    patient = new_patient()
    task_id = task_for(api, patient, description="\u0301", input=label_input("\u094d"))
    other = task_for(api, patient, description="Call")
    found = api.get(f"/Task?patient={patient}&description:exact={quote(chr(0x301))}")
    assert _ids(found) == [task_id]
    assert _ids(api.get(f"/Task?patient={patient}&label:exact={quote(chr(0x94D))}")) == [task_id]
    assert _ids(api.get(f"/Task?patient={patient}&description=c")) == [other]
    assert _ids(api.get(f"/Task?patient={patient}&description:contains=a")) == [other]


# --- leap seconds -----------------------------------------------------------------------------

LEAP = "2016-12-31T23:59:60Z"
LEAP_ELEMENTS = {
    "authored-on": lambda v: {"authoredOn": v},
    "due": lambda v: {"restriction": {"period": {"end": v}}},
    "modified": lambda v: {"lastModified": v},
    "period": lambda v: {"executionPeriod": {"start": v, "end": v}},
}


@pytest.mark.parametrize("param", list(LEAP_ELEMENTS))
@pytest.mark.parametrize("stored", [LEAP, "2016-12-31T23:59:60.5Z", "2016-12-31T18:59:60-05:00"])
def test_a_leap_second_is_found_in_its_minute_day_month_and_year(
    api: httpx.Client, param: str, stored: str
) -> None:
    patient = new_patient()
    task_id = task_for(api, patient, **LEAP_ELEMENTS[param](stored))

    def found(value: str) -> list[str]:
        return _ids(api.get("/Task", params={"patient": patient, param: value}))

    for value in ("2016", "2016-12", "2016-12-31", "2016-12-31T23:59Z", "le2016-12-31", LEAP):
        assert found(value) == [task_id], value
    for value in ("2017", "2017-01-01", "ge2017-01-01T00:00:00Z", "2016-12-31T23:58Z"):
        assert found(value) == [], value


def test_a_leap_second_sorts_after_the_rest_of_its_minute(api: httpx.Client) -> None:
    patient = new_patient()
    leap = task_for(api, patient, authoredOn=LEAP)
    before = task_for(api, patient, authoredOn="2016-12-31T23:59:59.999Z")
    after = task_for(api, patient, authoredOn="2017-01-01T00:00:00Z")
    response = api.get("/Task", params={"patient": patient, "_sort": "authored-on"})
    assert _ids(response) == [before, leap, after]


def test_a_leap_second_search_value_is_the_end_of_its_minute(api: httpx.Client) -> None:
    patient = new_patient()
    inside = task_for(api, patient, authoredOn="2016-12-31T23:59:30Z")
    task_for(api, patient, authoredOn="2017-01-01T00:00:00Z")
    for value in ("le2016-12-31T23:59:60Z", "lt2016-12-31T23:59:60.5Z"):
        assert _ids(api.get("/Task", params={"patient": patient, "authored-on": value})) == [inside]


# --- ASCII digits, and NFC for :exact ---------------------------------------------------------

ARABIC_2024 = "\u0662\u0660\u0662\u0664"  # ٢٠٢٤


@pytest.mark.parametrize(
    "value",
    [
        ARABIC_2024,
        f"ge{ARABIC_2024}-01",
        "2024-0\u0661",
        "2024-01-01T10:00:0\u0660Z",
        "2024-01-01T10:00:00.\u0665Z",
        "2024-01-01T10:00:00+0\u0661:00",
        "\uff12\uff10\uff12\uff14",  # fullwidth
        "2024-01-01T10:00:00\u00b2Z",
    ],
)
def test_a_date_with_digits_other_than_ascii_is_a_400(api: httpx.Client, value: str) -> None:
    _refused(api.get("/Task", params={"authored-on": value}), "authored-on")


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "1\u00b2", "\uff11"])
@pytest.mark.parametrize("param", ["_count", "_offset"])
def test_paging_with_digits_other_than_ascii_is_a_400(
    api: httpx.Client, param: str, value: str
) -> None:
    _refused(api.get("/Task", params={param: value}), param)


@pytest.mark.parametrize("vid", ["\u00b2", "\u0661", "\uff11", "\u00b9"])
def test_a_version_id_with_digits_other_than_ascii_is_not_found(
    api: httpx.Client, vid: str
) -> None:
    task_id = task_for(api, new_patient())
    response = api.get(f"/Task/{task_id}/_history/{quote(vid)}")
    assert response.status_code == 404, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


# a header is bytes: ¹ ² ³ arrive as one Latin-1 byte each, other scripts as UTF-8
IF_MATCH = {
    "superscript-one": b'W/"\xb9"',
    "superscript-two-bare": b"\xb2",
    "superscript-three-quoted": b'"\xb3"',
    "arabic-indic-one": 'W/"\u0661"'.encode(),
}


@pytest.mark.parametrize("etag", list(IF_MATCH.values()), ids=list(IF_MATCH))
def test_if_match_with_digits_other_than_ascii_is_a_400(api: httpx.Client, etag: bytes) -> None:
    task_id = task_for(api, new_patient())
    response = api.put(
        f"/Task/{task_id}",
        json=seed_task(id=task_id, status="completed"),
        headers={"If-Match": etag},
    )
    assert response.status_code == 400, response.text
    assert "If-Match" in response.json()["issue"][0]["details"]["text"]
    assert api.get(f"/Task/{task_id}").headers["etag"] == 'W/"1"'


COMPOSED = "Caf\u00e9 r\u00e9sum\u00e9"  # é as one code point
DECOMPOSED = "Cafe\u0301 re\u0301sume\u0301"  # e and a combining acute


@pytest.mark.parametrize(("stored", "searched"), [(COMPOSED, DECOMPOSED), (DECOMPOSED, COMPOSED)])
def test_exact_compares_the_nfc_forms(api: httpx.Client, stored: str, searched: str) -> None:
    patient = new_patient()
    task_id = task_for(api, patient, description=stored, input=label_input(stored))
    for param in ("description:exact", "label:exact"):
        found = api.get("/Task", params={"patient": patient, param: searched})
        assert _ids(found) == [task_id], param
    # the stored body is returned as it was sent
    assert api.get(f"/Task/{task_id}").json()["description"] == stored


def test_exact_still_tells_accents_and_case_apart(api: httpx.Client) -> None:
    patient = new_patient()
    task_for(api, patient, description=COMPOSED)
    for searched in ("Cafe resume", "caf\u00e9 r\u00e9sum\u00e9"):
        found = api.get("/Task", params={"patient": patient, "description:exact": searched})
        assert _ids(found) == [], searched
