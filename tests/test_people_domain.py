"""A person's scopes and what their writes record, as plain functions (no server)."""

from __future__ import annotations

import pytest

from caretask.auth import scopes, tokens
from caretask.domain import people
from caretask.domain.people import Person, with_note_authors, with_requester

ANN = Person("ann", "Practitioner/ann")
KEY = b"k" * 32


@pytest.mark.parametrize(
    ("requested", "allowed", "expected"),
    [
        ("user/Task.rs", "user/Task.*", "user/Task.rs"),
        ("user/Task.*", "user/Task.rs", "user/Task.rs"),
        ("user/Task.write", "user/Task.rs", ""),
        ("user/*.*", "user/Task.* user/Subscription.rs", "user/Task.cruds user/Subscription.rs"),
        ("openid fhirUser offline_access", "user/Task.*", "offline_access"),
        (None, "user/Task.* user/Subscription.*", "user/Task.* user/Subscription.*"),
        ("launch/patient user/Task.read", "user/Task.*", "user/Task.read"),
    ],
)
def test_a_persons_scope_is_what_the_app_asked_as_far_as_the_client_holds_it(
    requested: str | None, allowed: str, expected: str
) -> None:
    assert scopes.intersect(requested, allowed) == expected


@pytest.mark.parametrize("requested", ["system/Task.read", "patient/Task.read", "user/Ta*.read"])
def test_a_scope_that_is_not_a_persons_is_refused(requested: str) -> None:
    assert scopes.intersect(requested, "user/Task.*") is None


def test_user_scopes_grant_the_same_letters_as_system_scopes() -> None:
    assert scopes.granted("user/Task.read") == scopes.granted("system/Task.read")
    assert scopes.granted("user/Task.cu") == frozenset("cu")


def test_a_refusal_names_the_user_scope_for_a_person_and_the_system_one_otherwise() -> None:
    assert scopes.needed("c", "Task", scopes.USER) == "user/Task.write (or user/Task.c)"
    assert scopes.needed("c") == "system/Task.write (or system/Task.c)"


def test_client_credentials_scopes_stay_system_only() -> None:
    assert scopes.invalid_scopes("user/Task.read") == ["user/Task.read"]
    assert scopes.narrow("user/Task.read", "system/Task.read") is None


def test_a_person_token_carries_sub_client_id_fhir_user_and_teams() -> None:
    token = tokens.issue_person(
        KEY, "app", "user/Task.rs", 60, "ann", "Practitioner/ann", ("Group/g",)
    )
    claims = tokens.verify(KEY, token)
    assert (claims.client_id, claims.user, claims.fhir_user, claims.teams) == (
        "app",
        "ann",
        "Practitioner/ann",
        ("Group/g",),
    )


def test_a_client_token_has_no_person() -> None:
    claims = tokens.verify(KEY, tokens.issue(KEY, "ct_1", "system/Task.read", 60))
    assert (claims.user, claims.fhir_user, claims.teams) == (None, None, ())


def test_the_requester_default_applies_only_when_there_is_none() -> None:
    assert with_requester({"status": "requested"}, ANN)["requester"] == {
        "reference": "Practitioner/ann"
    }
    kept = {"requester": {"reference": "Practitioner/x"}}
    assert with_requester(kept, ANN) is kept
    assert with_requester({"status": "requested"}, None) == {"status": "requested"}


def test_only_the_notes_a_person_adds_without_an_author_get_them() -> None:
    previous = {"note": [{"text": "old", "time": "2024-01-01T00:00:00Z"}]}
    body = {
        "note": [
            {"text": "old", "time": "2024-01-01T00:00:00Z"},
            {"text": "old"},  # the stored one sent back without its time
            {"text": "new"},
            {"text": "signed", "authorString": "Bo"},
        ]
    }
    notes = with_note_authors(body, previous, ANN)["note"]
    assert [n.get("authorReference") for n in notes] == [
        None,
        None,
        {"reference": "Practitioner/ann"},
        None,
    ]


def test_a_note_resent_after_it_was_given_its_author_gets_the_same_author() -> None:
    previous = {"note": [{"text": "mine", "authorReference": {"reference": "Practitioner/ann"}}]}
    notes = with_note_authors({"note": [{"text": "mine"}]}, previous, ANN)["note"]
    assert notes == previous["note"]


@pytest.mark.parametrize(
    ("uri", "origin"),
    [
        ("https://app.example.org/cb", "https://app.example.org"),
        ("http://localhost:8080/cb?x=1", "http://localhost:8080"),
        ("http://[::1]:9000/cb", "http://[::1]:9000"),
        ("https://app.example.org;script-src */cb", None),
        ("https://user@app.example.org/cb", None),
        ("https://app.example.org 'unsafe-inline'/cb", None),
        ("ftp://app.example.org/cb", None),
    ],
)
def test_a_redirect_uris_origin_is_only_ever_a_plain_host(uri: str, origin: str | None) -> None:
    """It goes in the sign-in page's Content-Security-Policy (form-action): nothing there
    may end the directive."""
    assert people.redirect_origin(uri) == origin
