"""The audit trail's records (domain.audit): search values never kept, and AuditEvents that
FHIR R4's model accepts. How requests are named: tests/test_routes.py."""

from __future__ import annotations

import base64

from fhir.resources.R4B.auditevent import AuditEvent

from caretask.domain.audit import (
    AuditRecord,
    audit_event,
    decode_batch,
    encode_batch,
    redact_query,
    select,
    text_line,
)


def test_search_values_are_redacted_and_names_kept_in_order() -> None:
    assert redact_query("patient=Patient%2F123&status=ready&description=Bob") == (
        "patient=*&status=*&description=*"
    )


def test_result_parameter_values_are_kept() -> None:
    assert redact_query("_count=5&_offset=10&_sort=-due&owner=x") == (
        "_count=5&_offset=10&_sort=-due&owner=*"
    )


def test_modifiers_are_kept_with_the_name() -> None:
    assert redact_query("description%3Acontains=diabetes") == "description:contains=*"


def test_a_huge_query_is_cut_short() -> None:
    query = redact_query("&".join(f"label{i}=x" for i in range(1000)))
    assert query is not None
    assert len(query) <= 1001
    assert query.endswith("…")


def test_an_empty_query_is_none() -> None:
    assert redact_query("") is None


def _record(**changes: object) -> AuditRecord:
    values: dict[str, object] = {
        "recorded": 1_700_000_000_123_456,
        "client_id": "ct_abc",
        "interaction": "vread",
        "method": "GET",
        "resource_id": "t-1",
        "version_id": 2,
        "query": None,
        "address": "127.0.0.1",
        "status": 200,
        "event_id": "7-0",
    }
    values.update(changes)
    return AuditRecord(**values)  # type: ignore[arg-type]


def test_an_audit_event_is_valid_fhir_r4() -> None:
    event = audit_event(_record())
    AuditEvent.model_validate(event)
    assert event["id"] == "7-0"
    assert event["recorded"] == "2023-11-14T22:13:20.123456Z"
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert event["subtype"] == [
        {"system": "http://hl7.org/fhir/restful-interaction", "code": "vread"}
    ]
    assert event["agent"] == [
        {
            "requestor": True,
            "who": {"identifier": {"system": "urn:caretask:client-id", "value": "ct_abc"}},
            "network": {"address": "127.0.0.1", "type": "2"},
        }
    ]
    assert event["entity"][0]["what"] == {"reference": "Task/t-1/_history/2"}


def test_a_search_event_carries_the_redacted_query_in_base64() -> None:
    event = audit_event(_record(interaction="search-type", resource_id=None, query="patient=*"))
    AuditEvent.model_validate(event)
    assert event["action"] == "E"
    assert base64.b64decode(event["entity"][0]["query"]) == b"patient=*"


def test_refusals_are_minor_failures_and_server_errors_serious_ones() -> None:
    assert audit_event(_record(status=401, client_id=None))["outcome"] == "4"
    assert audit_event(_record(status=503))["outcome"] == "8"


def test_an_unauthenticated_request_has_no_who_but_is_still_valid() -> None:
    event = audit_event(_record(status=401, client_id=None))
    AuditEvent.model_validate(event)
    assert "who" not in event["agent"][0]
    assert event["agent"][0]["name"] == "unauthenticated"


def test_a_login_is_a_dicom_user_authentication_event() -> None:
    event = audit_event(
        _record(interaction="login", method="POST", resource_id=None, version_id=None)
    )
    AuditEvent.model_validate(event)
    assert event["type"]["code"] == "110114"
    assert event["subtype"][0]["code"] == "110122"


def test_the_text_line_is_tab_separated_when_who_where_what_outcome() -> None:
    assert text_line(_record(query="_count=5")).split("\t") == [
        "2023-11-14T22:13:20.123456Z",
        "ct_abc",
        "127.0.0.1",
        "GET",
        "vread",
        "Task/t-1/_history/2",
        "_count=5",
        "200",
    ]


def test_a_batch_keeps_its_records_in_order_and_names_its_clients() -> None:
    records = [
        _record(recorded=30, client_id="ct_b", event_id=None),
        _record(recorded=10, client_id=None, event_id=None),
        _record(recorded=20, client_id="ct_a", event_id=None),
    ]
    batch = encode_batch(records)
    assert (batch.first_recorded, batch.last_recorded) == (10, 30)
    assert batch.clients == "ct_a\nct_b"
    decoded = decode_batch(12, batch.records)
    assert [r.event_id for r in decoded] == ["12-0", "12-1", "12-2"]
    assert [r._replace(event_id=None) for r in decoded] == records


def test_selection_filters_records_exactly_by_client_and_time() -> None:
    batch = encode_batch(
        [
            _record(recorded=10, client_id="ct_a"),
            _record(recorded=20, client_id="ct_ab"),
            _record(recorded=30, client_id="ct_a"),
        ]
    )
    batches = [(1, batch.records)]
    assert [r.recorded for r in select(batches, "ct_a", None)] == [10, 30]
    assert [r.recorded for r in select(batches, None, 20)] == [20, 30]
    assert [r.recorded for r in select(batches, "ct_a", 20)] == [30]


def test_control_characters_in_names_are_replaced() -> None:
    assert redact_query("pat%00ient=x&_count=1%00") == "pat?ient=*&_count=1?"
