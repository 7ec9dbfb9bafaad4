"""SPEC 7: every bad input is a 4xx OperationOutcome that says what is wrong and writes nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.clients import create_task
from tests.support.seed import SEED_CREATE, seed_task

# the seed's update example, literally: restriction and note sent as JSON strings
SEED_UPDATE = {
    **{k: v for k, v in SEED_CREATE.items() if k not in ("restriction", "note")},
    "restriction": '{         "period": {             "end": "2022-08-01T04:00:00+00:00"         }     }',  # noqa: E501
    "note": '[         {             "text": "Please be sure to scan them in at their next visit.",'
    '             "time": "2022-03-20T14:00:00.000Z"             "authorReference": {'
    '               "reference": "Practitioner/5eede137ecfe4124b8b773040e33be14"             }'
    "         }     ]",
}


def _assert_outcome(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    for issue in body["issue"]:
        assert issue["severity"] in ("error", "fatal")
        assert issue["code"]
        assert issue["details"]["text"]
    assert "Traceback" not in response.text
    return body


def _expressions(body: dict[str, Any]) -> list[str]:
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


def _stored(api: httpx.Client) -> int:
    return api.get("/Task", params={"_summary": "count"}).json()["total"]


def _rejected_create(api: httpx.Client, body: Any, expression: str | None) -> dict[str, Any]:
    """POST a bad body: a 400 naming `expression`, and nothing stored."""
    before = _stored(api)
    result = _assert_outcome(api.post("/Task", json=body), 400)
    if expression:
        assert expression in _expressions(result), result
    assert _stored(api) == before
    return result


def test_invalid_json_is_400(api: httpx.Client) -> None:
    response = api.post(
        "/Task", content=b'{"resourceType": "Task",', headers={"Content-Type": "application/json"}
    )
    body = _assert_outcome(response, 400)
    assert "JSON" in body["issue"][0]["details"]["text"]


def test_non_object_json_is_400(api: httpx.Client) -> None:
    for payload in ([SEED_CREATE], "Task", 42, None):
        _assert_outcome(
            api.post(
                "/Task",
                content=json.dumps(payload),
                headers={"Content-Type": "application/fhir+json"},
            ),
            400,
        )


def test_empty_body_is_400(api: httpx.Client) -> None:
    response = api.post("/Task", content=b"", headers={"Content-Type": "application/json"})
    _assert_outcome(response, 400)


def test_wrong_resource_type_is_400(api: httpx.Client) -> None:
    _rejected_create(api, {**SEED_CREATE, "resourceType": "Patient"}, "Task.resourceType")


@pytest.mark.parametrize("element", ["status", "description", "requester"])
def test_each_required_element_missing_is_400_naming_it(api: httpx.Client, element: str) -> None:
    body = _rejected_create(api, seed_task(**{element: None}), f"Task.{element}")
    assert any(i["code"] == "required" for i in body["issue"])


def test_missing_intent_defaults_to_unknown_as_canvas_does(api: httpx.Client) -> None:
    task_id = create_task(api, seed_task(intent=None))
    assert api.get(f"/Task/{task_id}").json()["intent"] == "unknown"


def test_unknown_status_code_is_400(api: httpx.Client) -> None:
    _rejected_create(api, seed_task(status="done"), "Task.status")


def test_unknown_intent_code_is_400(api: httpx.Client) -> None:
    _rejected_create(api, seed_task(intent="maybe"), "Task.intent")


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"authoredOn": "2022-13-45"}, "Task.authoredOn"),
        ({"authoredOn": "yesterday"}, "Task.authoredOn"),
        ({"authoredOn": "2022-03-20T14:00:00"}, "Task.authoredOn"),  # time without zone
        ({"restriction": {"period": {"end": "soon"}}}, "Task.restriction.period.end"),
    ],
)
def test_invalid_date_is_400(api: httpx.Client, changes: dict[str, Any], expression: str) -> None:
    _rejected_create(api, seed_task(**changes), expression)


def test_invalid_note_time_names_the_note(api: httpx.Client) -> None:
    note = {**SEED_CREATE["note"][0], "time": "not a time"}
    _rejected_create(api, seed_task(note=[note]), "Task.note[0].time")


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"for_": {"reference": "Practitioner/abc"}}, "Task.for"),
        ({"owner": {"reference": "Patient/abc"}}, "Task.owner"),
        ({"requester": {"reference": "Group/abc"}}, "Task.requester"),
        ({"requester": {"display": "no reference"}}, "Task.requester"),
        ({"owner": {"reference": "Practitioner/abc", "type": "Patient"}}, "Task.owner"),
    ],
)
def test_reference_of_the_wrong_type_is_400(
    api: httpx.Client, changes: dict[str, Any], expression: str | None
) -> None:
    _rejected_create(api, seed_task(**changes), expression)


def test_note_author_must_be_a_practitioner(api: httpx.Client) -> None:
    note = {**SEED_CREATE["note"][0], "authorReference": {"reference": "Patient/p"}}
    _rejected_create(api, seed_task(note=[note]), "Task.note[0].authorReference")


def test_task_group_must_reference_a_group(api: httpx.Client) -> None:
    ext = [
        {
            "url": SEED_CREATE["extension"][0]["url"],
            "valueReference": {"reference": "Practitioner/x"},
        }
    ]
    _rejected_create(api, seed_task(extension=ext), "Task.extension[0].valueReference")


def test_wrong_json_types_are_400(api: httpx.Client) -> None:
    _rejected_create(api, seed_task(description=123), "Task.description")
    _rejected_create(api, seed_task(note={"text": "not a list"}), "Task.note")


def test_null_values_are_400(api: httpx.Client) -> None:
    body = {**SEED_CREATE, "owner": None}
    _rejected_create(api, body, "Task.owner")


def test_unknown_element_is_400(api: httpx.Client) -> None:
    _rejected_create(api, {**SEED_CREATE, "colour": "blue"}, "Task.colour")


def test_control_characters_are_400(api: httpx.Client) -> None:
    _rejected_create(api, seed_task(description="a\u0000b"), "Task.description")


def test_seed_update_example_with_json_strings_is_400_and_writes_nothing(
    api: httpx.Client,
) -> None:
    task_id = create_task(api, SEED_CREATE)
    response = api.put(f"/Task/{task_id}", json=SEED_UPDATE)
    body = _assert_outcome(response, 400)
    assert "Task.restriction" in _expressions(body)
    assert "Task.note" in _expressions(body)
    task = api.get(f"/Task/{task_id}").json()
    assert task["meta"]["versionId"] == "1"


def test_seed_update_example_on_create_is_400_too(api: httpx.Client) -> None:
    body = _assert_outcome(api.post("/Task", json=SEED_UPDATE), 400)
    assert "Task.restriction" in _expressions(body)


def test_complex_element_sent_as_json_string_deeper_down_is_400(api: httpx.Client) -> None:
    _rejected_create(
        api,
        seed_task(restriction={"period": '{"end": "2022-08-01"}'}),
        "Task.restriction.period",
    )


def test_wrong_content_type_is_415(api: httpx.Client) -> None:
    response = api.post(
        "/Task", content=json.dumps(SEED_CREATE), headers={"Content-Type": "text/plain"}
    )
    _assert_outcome(response, 415)
    response = api.post(
        "/Task",
        content=json.dumps(SEED_CREATE),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _assert_outcome(response, 415)


def test_fhir_json_content_type_with_charset_is_accepted(api: httpx.Client) -> None:
    response = api.post(
        "/Task",
        content=json.dumps(SEED_CREATE),
        headers={"Content-Type": "application/fhir+json; charset=utf-8"},
    )
    assert response.status_code == 201


def test_body_over_one_mebibyte_is_413(api: httpx.Client) -> None:
    big = seed_task(description="x" * (1024 * 1024 + 10))
    _assert_outcome(api.post("/Task", json=big), 413)


def test_body_over_the_limit_without_content_length_is_413(api: httpx.Client) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"resourceType": "Task", "description": "'
        for _ in range(80):
            yield b"x" * 16384
        yield b'"}'

    response = api.post("/Task", content=chunks(), headers={"Content-Type": "application/json"})
    _assert_outcome(response, 413)


def test_deeply_nested_json_is_400_not_a_crash(api: httpx.Client) -> None:
    for depth in (100, 5000):
        nested = '{"resourceType": "Task", "code": ' + '{"coding": [' * depth + "]}" * depth + "}"
        response = api.post("/Task", content=nested, headers={"Content-Type": "application/json"})
        _assert_outcome(response, 400)


def test_accept_of_xml_only_is_406(api: httpx.Client) -> None:
    response = api.get("/Task", headers={"Accept": "application/fhir+xml"})
    _assert_outcome(response, 406)


def test_seed_accept_application_json_is_fine(api: httpx.Client) -> None:
    assert api.get("/Task", headers={"Accept": "application/json"}).status_code == 200


def test_unknown_route_is_404(api: httpx.Client) -> None:
    _assert_outcome(api.get("/Patient"), 404)
    _assert_outcome(api.get("/Task/a/b/c/d"), 404)


def test_unsupported_method_is_405(api: httpx.Client) -> None:
    task_id = create_task(api, SEED_CREATE)
    _assert_outcome(api.post(f"/Task/{task_id}", json=SEED_CREATE), 405)


def test_invalid_utf8_is_400(api: httpx.Client) -> None:
    raw = json.dumps(SEED_CREATE).encode().replace(b"Ask", b"\xff\xfe")
    response = api.post("/Task", content=raw, headers={"Content-Type": "application/json"})
    _assert_outcome(response, 400)


def test_lone_surrogate_escape_is_400(api: httpx.Client) -> None:
    raw = json.dumps(SEED_CREATE).replace("Ask", "\\ud800")
    response = api.post("/Task", content=raw, headers={"Content-Type": "application/json"})
    _assert_outcome(response, 400)
