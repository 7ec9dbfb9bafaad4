"""The session-end search of server logs for sent values (conftest's _no_phi_in_server_logs)
finds what it looks for: a scan that could not fail would prove nothing."""

from __future__ import annotations

import httpx

from tests.support.log_scan import SENT, leaked_values, remember_sent


def test_descriptions_notes_patients_and_tokens_sent_are_remembered() -> None:
    body = {
        "resourceType": "Task",
        "description": "Review the colonoscopy report",
        "for": {"reference": "Patient/a1b2c3d4e5f6"},
        "note": [{"text": "Patient prefers morning calls"}],
    }
    request = httpx.Request(
        "POST",
        "http://127.0.0.1/Task",
        json=body,
        headers={"Authorization": "Bearer eyJ.token.value", "Content-Type": "application/json"},
    )
    remember_sent(request)
    assert {
        "Review the colonoscopy report",
        "Patient/a1b2c3d4e5f6",
        "a1b2c3d4e5f6",
        "Patient prefers morning calls",
        "eyJ.token.value",
    } <= SENT


def test_search_values_that_carry_phi_are_remembered_and_others_not() -> None:
    request = httpx.Request(
        "GET", "http://127.0.0.1/Task?patient=f00dcafe1234&status=requested&_count=100"
    )
    remember_sent(request)
    assert "f00dcafe1234" in SENT
    assert "requested" not in SENT


def test_form_secrets_are_remembered() -> None:
    request = httpx.Request(
        "POST",
        "http://127.0.0.1/auth/token/",
        data={"grant_type": "client_credentials", "client_secret": "s3cr3t-value-xyz"},
    )
    remember_sent(request)
    assert "s3cr3t-value-xyz" in SENT


def test_a_sent_value_in_a_log_is_found_raw_or_percent_encoded() -> None:
    sent = {"Call Mrs Smith today", "Patient/abc12345"}
    assert leaked_values("INFO: GET /Task 200 description=Call Mrs Smith today", sent) == [
        "Call Mrs Smith today"
    ]
    assert leaked_values("INFO: GET /Task?subject=Patient%2Fabc12345 200", sent) == [
        "Patient/abc12345"
    ]
    assert leaked_values("INFO: GET /Task params=patient 200 1.2ms", sent) == []


def test_a_value_that_is_not_valid_unicode_does_not_break_the_scan() -> None:
    assert leaked_values("INFO: GET /Task 200", {"\ud800 lone surrogate"}) == []
