"""domain.transaction, as plain functions: a Bundle's entries read into interactions on
Task, FHIR's processing order, urn:uuid references resolved, failures located."""

from __future__ import annotations

from typing import Any

import pytest

from caretask.domain import transaction
from caretask.domain.errors import InvalidRequest, InvalidResource, NotFound, TooLarge
from caretask.domain.transaction import Entry, Refused

BASE = "https://tasks.example.org/fhir"


def _read(*requests: dict[str, Any], kind: str = "batch") -> list[Entry | Refused]:
    entries = [
        {"request": r, **({"resource": {}} if r["method"] in ("POST", "PUT") else {})}
        for r in requests
    ]
    bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return transaction.read_bundle(bundle, 10, BASE).entries


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("GET", "Task", ("search-type", None, None, "")),
        ("GET", "Task?status=requested", ("search-type", None, None, "status=requested")),
        ("POST", "Task", ("create", None, None, None)),
        ("PUT", "Task?identifier=a|1", ("update", None, None, "identifier=a|1")),
        ("PUT", "Task/abc", ("update", "abc", None, None)),
        ("GET", "Task/abc", ("read", "abc", None, None)),
        ("GET", "/Task/abc", ("read", "abc", None, None)),
        ("GET", f"{BASE}/Task/abc", ("read", "abc", None, None)),
        ("GET", "Task/abc/_history", ("history-instance", "abc", None, "")),
        ("GET", "Task/abc/_history/2", ("vread", "abc", "2", None)),
        ("PATCH", "Task/abc", ("patch", "abc", None, None)),
        ("DELETE", "Task/abc", ("delete", "abc", None, None)),
        ("DELETE", "Task?identifier=a|1", ("delete", None, None, "identifier=a|1")),
    ],
)
def test_an_entry_is_read_as_its_interaction_on_task(
    method: str, url: str, expected: tuple[str, str | None, str | None, str | None]
) -> None:
    (entry,) = _read({"method": method, "url": url})
    assert isinstance(entry, Entry)
    assert (entry.interaction, entry.task_id, entry.version, entry.search) == expected


@pytest.mark.parametrize(
    "url",
    [
        "Task/../metadata",
        "Task/./abc",
        "Task//abc",
        "metadata",
        "Patient/1",
        "https://other.example/fhir/Task/1",
        "https://tasks.example.org/fhirx/Task/1",
        "urn:uuid:0b5e3c1e-6f0e-4d8e-9a43-3f8d2a9c7e11",
        "Task/abc/_history/1/2",
        "Task/abc/metadata",
        "Task/a b",
    ],
)
def test_an_entry_url_that_is_no_interaction_on_task_is_refused_in_place(url: str) -> None:
    (entry,) = _read({"method": "GET", "url": url})
    assert isinstance(entry, Refused)
    assert isinstance(entry.error, InvalidRequest)
    assert entry.error.issues[0].expression == "Bundle.entry[0].request.url"


def test_the_bundle_itself_must_be_a_batch_or_transaction() -> None:
    with pytest.raises(InvalidResource):
        transaction.read_bundle({"resourceType": "Task"}, 10, BASE)
    with pytest.raises(InvalidRequest):
        transaction.read_bundle({"resourceType": "Bundle", "type": "collection"}, 10, BASE)


def test_more_entries_than_allowed_is_too_large_naming_the_limit() -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{}] * 11}
    with pytest.raises(TooLarge) as refused:
        transaction.read_bundle(bundle, 10, BASE)
    assert "at most 10" in refused.value.issues[0].text


def test_a_transaction_is_processed_deletes_creates_updates_then_reads() -> None:
    entries = _read(
        {"method": "GET", "url": "Task/a"},
        {"method": "PUT", "url": "Task/b"},
        {"method": "POST", "url": "Task"},
        {"method": "DELETE", "url": "Task/c"},
        {"method": "PATCH", "url": "Task/d"},
        {"method": "POST", "url": "Task"},
        kind="transaction",
    )
    ordered = transaction.processing_order(e for e in entries if isinstance(e, Entry))
    assert [e.index for e in ordered] == [3, 2, 5, 1, 4, 0]


def test_references_to_full_urls_resolve_to_task_ids_wherever_they_are() -> None:
    urn = "urn:uuid:0b5e3c1e-6f0e-4d8e-9a43-3f8d2a9c7e11"
    task = {
        "partOf": [{"reference": urn}],
        "basedOn": [{"reference": urn, "display": "parent"}],
        "input": [{"valueReference": {"reference": urn}}],
        "focus": {"reference": "Task/other"},
    }
    resolved = transaction.resolve(task, {urn: "abc"})
    assert resolved["partOf"] == [{"reference": "Task/abc"}]
    assert resolved["basedOn"] == [{"reference": "Task/abc", "display": "parent"}]
    assert resolved["input"][0]["valueReference"] == {"reference": "Task/abc"}
    assert resolved["focus"] == {"reference": "Task/other"}
    assert task["partOf"] == [{"reference": urn}]  # the original is left as it was
    assert transaction.urn_references(task) == {urn}


def test_a_failure_is_located_in_its_entry() -> None:
    error = NotFound.task("abc", "no Task has this id")
    located = transaction.at_entry(error, 3, "PUT", "Task/abc")
    assert isinstance(located, NotFound)
    issue = located.issues[0]
    assert issue.expression == "Bundle.entry[3]"
    assert issue.diagnostics == "entry 3: PUT Task/abc: no Task has this id"
    invalid = InvalidRequest.single("invalid", "bad", "Task.status")
    assert transaction.at_entry(invalid, 1, "POST", "Task").issues[0].expression == (
        "Bundle.entry[1].resource.status"
    )


def test_a_response_entry_says_its_status_as_fhir_shows_it() -> None:
    assert transaction.answer(201)["response"]["status"] == "201 Created"
    assert transaction.answer(412)["response"]["status"] == "412 Precondition Failed"
    # RFC 9110's phrases, whichever Python runs
    assert transaction.answer(413)["response"]["status"] == "413 Content Too Large"
    assert transaction.answer(422)["response"]["status"] == "422 Unprocessable Content"


def test_only_a_write_has_a_condition() -> None:
    search, put, create = _read(
        {"method": "GET", "url": "Task?identifier=a|1"},
        {"method": "PUT", "url": "Task?identifier=a|1"},
        {"method": "POST", "url": "Task", "ifNoneExist": "identifier=a|1"},
    )
    assert isinstance(search, Entry) and search.condition is None
    assert isinstance(put, Entry) and put.condition == "identifier=a|1"
    assert isinstance(create, Entry) and create.condition == "identifier=a|1"
