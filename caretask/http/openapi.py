"""The OpenAPI 3.1 description of this server, served at GET /openapi.json: its paths from the
route table (http.routes), in the vocabulary this module gives, its schemas from here.

Built from the same tables the server enforces (codes, search parameters, id and reference
forms, limits), so that a fuzzer working from it sends what the server should accept, and checks
every answer against what the server promises. Two flavours of each FHIR data type:
*closed* for request bodies (exactly what the server accepts: no unknown elements), *open*
for responses (a stored Task holds any element FHIR allows, so unlisted names may appear).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from caretask import __version__
from caretask.config import Settings
from caretask.domain import etag, profiles
from caretask.domain.dates import FHIR_DATE_TIME, FHIR_INSTANT
from caretask.domain.patch import JSON_PATCH, MAX_OPERATIONS
from caretask.domain.profiles import Profile
from caretask.domain.references import ID_PATTERN as ID_FORM
from caretask.domain.references import TYPE_PATTERN
from caretask.domain.search_params import (
    DATE_PREFIXES,
    INCLUDABLE,
    MAX_INCLUDE_VALUES,
    MAX_OFFSET,
    MAX_SORT_KEYS,
    PARAMETERS,
    SORT_ALIASES,
    ParamDef,
)
from caretask.domain.subsetting import ALWAYS_KEPT, MAX_ELEMENTS, SUMMARY_VALUES
from caretask.domain.task_rules import (
    GROUP_EXTENSION,
    PERMALINK_EXTENSION,
    TASK_INTENT,
    TASK_PRIORITY,
    TASK_STATUS,
    WHITESPACE,
)

Schema = dict[str, Any]

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

# FHIR's primitive forms, as the server checks them (task_rules: no control characters).
# Whitespace is the server's, spelled out: `\\s` reads differently in the validator
# (ECMA-262), the generator (Python, ASCII) and the server (Python, Unicode).
_NO_CONTROL = "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f"
_WORD = f"[^{WHITESPACE}{_NO_CONTROL}]+"
STRING_PATTERN = f"^[^{_NO_CONTROL}]+$"
CODE_PATTERN = f"^{_WORD}( {_WORD})*$"
URI_PATTERN = f"^{_WORD}$"
ID_PATTERN = f"^{ID_FORM.pattern}$"
_REF_ID = ID_FORM.pattern
ETAG_PATTERN = etag.PATTERN


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(item: Schema, closed: bool) -> Schema:
    out: Schema = {"type": "array", "items": item}
    if closed:
        out["minItems"] = 1
        out["maxItems"] = 3  # no limit on the server; keeps generated bodies small
    return out


def _object(properties: dict[str, Schema], closed: bool, required: tuple[str, ...] = ()) -> Schema:
    """A FHIR complex type: no empty objects, and (closed) no elements outside `properties`."""
    out: Schema = {"type": "object", "properties": properties, "minProperties": 1}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def _literal_reference(target: str) -> str:
    """task_rules' reference form (references.split_reference) for one resource type."""
    return (
        f"^(https?://[^{WHITESPACE}{_NO_CONTROL}/]+(/[^{WHITESPACE}{_NO_CONTROL}]*)?/)?"
        f"{target}/{_REF_ID}"
        f"(/_history/{_REF_ID})?$"
        if target
        else URI_PATTERN
    )


def _types(closed: bool) -> dict[str, Schema]:
    """The FHIR data types a Task uses, suffixed Open for the response flavour."""
    string = {"type": "string", "pattern": STRING_PATTERN}
    code = {"type": "string", "pattern": CODE_PATTERN}
    uri = {"type": "string", "pattern": URI_PATTERN}
    date_time = {"type": "string", "pattern": f"^{FHIR_DATE_TIME}$"}
    s = "" if closed else "Open"
    coding = _object({"system": uri, "version": string, "code": code, "display": string}, closed)
    identifier = _object({"use": code, "system": uri, "value": string}, closed)
    types: dict[str, Schema] = {
        f"Coding{s}": coding,
        f"CodeableConcept{s}": _object(
            {"coding": _list(ref(f"Coding{s}"), closed), "text": string}, closed
        ),
        f"Identifier{s}": identifier,
        f"Period{s}": _object({"start": date_time, "end": date_time}, closed),
        f"Reference{s}": _object(
            {
                "reference": {"type": "string", "pattern": _literal_reference("")},
                "type": uri,
                "identifier": ref(f"Identifier{s}"),
                "display": string,
            },
            closed,
        ),
        f"Annotation{s}": _object(
            {
                "text": {**string, "description": "the comment"},
                "time": {**date_time, "description": "defaults to the time of ingestion"},
                "authorReference": ref(f"PractitionerReference{s}"),
                "authorString": string,
            },
            closed,
            ("text",),
        ),
        f"Extension{s}": _extension(closed),
        f"TaskParameter{s}": _object(
            {
                "type": ref(f"CodeableConcept{s}"),
                "valueString": string,
                "valueBoolean": {"type": "boolean"},
                "valueInteger": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
                "valueReference": ref(f"Reference{s}"),
                "valueCodeableConcept": ref(f"CodeableConcept{s}"),
            },
            closed,
            ("type",),
        ),
        f"Meta{s}": _object(
            {
                "versionId": {"type": "string", "pattern": "^[0-9]+$", "readOnly": True},
                "lastUpdated": {"type": "string", "pattern": f"^{FHIR_INSTANT}$", "readOnly": True},
                "source": uri,
                "profile": _list(uri, closed),
                "tag": _list(ref(f"Coding{s}"), closed),
                "security": _list(ref(f"Coding{s}"), closed),
            },
            closed,
        ),
        f"Element{s}": _object(
            {"id": string, "extension": _list(ref(f"Extension{s}"), closed)}, closed
        ),
    }
    for target in ("Practitioner", "Patient", "Group", "Encounter", "Task"):
        types[f"{target}Reference{s}"] = _object(
            {
                "reference": {
                    "type": "string",
                    "pattern": _literal_reference(target) if closed else _literal_reference(""),
                    "description": f"{target}/<id> (absolute URLs and _history allowed)",
                },
                "type": {"type": "string", "const": target} if closed else uri,
                "display": string,
            },
            closed,
            ("reference",),
        )
    if closed:
        # exactly one of them holds; the open flavour does not need to say which
        types["TaskParameter"] = {
            **types["TaskParameter"],
            "oneOf": [
                {"required": [v]}
                for v in (
                    "valueString",
                    "valueBoolean",
                    "valueInteger",
                    "valueReference",
                    "valueCodeableConcept",
                )
            ],
        }
    return types


def _extension(closed: bool) -> Schema:
    """An extension: the Canvas task-group (a Group reference), the generated permalink (in
    responses), or any other with one value."""
    s = "" if closed else "Open"
    uri = {"type": "string", "pattern": URI_PATTERN}
    string = {"type": "string", "pattern": STRING_PATTERN}
    group = _object(
        {"url": {"const": GROUP_EXTENSION}, "valueReference": ref(f"GroupReference{s}")},
        closed,
        ("url", "valueReference"),
    )
    if not closed:
        return _object(
            {"url": uri, "valueString": string, "valueReference": ref("ReferenceOpen")},
            False,
            ("url",),
        )
    other_url = {**uri, "not": {"enum": [GROUP_EXTENSION, PERMALINK_EXTENSION]}}
    values: dict[str, Schema] = {
        "valueString": string,
        "valueBoolean": {"type": "boolean"},
        "valueCode": {"type": "string", "pattern": CODE_PATTERN},
        "valueReference": ref("Reference"),
    }
    others = [
        _object({"url": other_url, name: value}, True, ("url", name))
        for name, value in values.items()
    ]
    return {
        "description": "the permalink extension is generated; one sent in a body is dropped",
        "oneOf": [group, *others],
    }


def _task_properties(closed: bool, statuses: frozenset[str] = TASK_STATUS) -> dict[str, Schema]:
    s = "" if closed else "Open"
    string = {"type": "string", "pattern": STRING_PATTERN}
    uri = {"type": "string", "pattern": URI_PATTERN}
    date_time = {"type": "string", "pattern": f"^{FHIR_DATE_TIME}$"}

    def many(name: str) -> Schema:
        return _list(ref(f"{name}{s}"), closed)

    return {
        "resourceType": {"type": "string", "const": "Task"},
        "id": {
            "type": "string",
            "pattern": ID_PATTERN,
            "readOnly": True,
            "description": "server-assigned; ignored on create, must match the URL on update",
        },
        "meta": ref(f"Meta{s}"),
        "implicitRules": uri,
        "language": {"type": "string", "pattern": CODE_PATTERN},
        "extension": {
            **many("Extension"),
            "description": f"the team: {GROUP_EXTENSION}; responses add {PERMALINK_EXTENSION}",
        },
        "modifierExtension": many("Extension"),
        "identifier": many("Identifier"),
        "instantiatesCanonical": uri,
        "instantiatesUri": uri,
        "basedOn": many("Reference"),
        "groupIdentifier": ref(f"Identifier{s}"),
        "partOf": many("TaskReference"),
        "status": {"type": "string", "enum": sorted(statuses)},
        "statusReason": ref(f"CodeableConcept{s}"),
        "businessStatus": ref(f"CodeableConcept{s}"),
        "intent": {
            "type": "string",
            "enum": sorted(TASK_INTENT),
            "description": "defaults to unknown",
        },
        "priority": {"type": "string", "enum": sorted(TASK_PRIORITY)},
        "code": ref(f"CodeableConcept{s}"),
        "description": string,
        "focus": ref(f"Reference{s}"),
        "for": ref(f"PatientReference{s}"),
        "encounter": ref(f"EncounterReference{s}"),
        "executionPeriod": ref(f"Period{s}"),
        "authoredOn": {**date_time, "description": "defaults to the time of creation"},
        "lastModified": date_time,
        "requester": ref(f"PractitionerReference{s}"),
        "performerType": many("CodeableConcept"),
        "owner": {**ref(f"PractitionerReference{s}"), "description": "the assignee"},
        "location": ref(f"Reference{s}"),
        "reasonCode": ref(f"CodeableConcept{s}"),
        "reasonReference": ref(f"Reference{s}"),
        "note": many("Annotation"),
        "restriction": _object(
            {
                "repetitions": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                "period": {**ref(f"Period{s}"), "description": "period.end is the due date"},
                "recipient": many("Reference"),
            },
            closed,
        ),
        "input": {**many("TaskParameter"), "description": "labels: type.text = label"},
        "output": many("TaskParameter"),
    }


def _task_schemas(profile: Profile) -> dict[str, Schema]:
    # what a request may say is the profile's; a stored Task may hold any R4 status (another
    # profile may have written it), and in canvas an update may clear its description
    closed = _task_properties(True, profiles.statuses(profile))
    element_extensions = {
        f"_{name}": ref("Element")
        for name in ("status", "intent", "priority", "description", "authoredOn")
    }
    request: Schema = {
        "type": "object",
        "description": "A FHIR R4 Task as the Canvas Task API takes it",
        "properties": {**closed, **element_extensions},
        "required": ["resourceType", "status", "description", "requester"],
        "additionalProperties": False,
    }
    open_properties = _task_properties(False)
    stored: Schema = {
        "type": "object",
        "description": "A stored Task: what was sent, with id, meta, defaults and permalink",
        "properties": open_properties,
        "propertyNames": {"pattern": "^(resourceType|fhir_comments|_?[a-z][A-Za-z]*)$"},
        "required": [
            "resourceType",
            "id",
            "meta",
            "status",
            "intent",
            *(["description"] if profile == profiles.FHIR else []),
            "requester",
            "authoredOn",
            "extension",
        ],
    }
    subsetted: Schema = {
        "type": "object",
        "description": "A Task cut down by _elements or _summary (meta.tag SUBSETTED)",
        "properties": open_properties,
        "required": ["resourceType", *sorted(ALWAYS_KEPT - {"resourceType"})],
    }
    read: Schema = {
        "description": "A stored Task, whole or (with _summary or _elements) cut down",
        "anyOf": [ref("StoredTask"), ref("SubsettedTask")],
    }
    return {"Task": request, "StoredTask": stored, "SubsettedTask": subsetted, "ReadTask": read}


def _bundle_schemas(profile: Profile) -> dict[str, Schema]:
    # canvas's links are host-relative (the seed's), fhir's absolute
    url: Schema = {
        "type": "string",
        "pattern": "^/" if profile == profiles.CANVAS else "^https?://",
    }
    link = {
        "type": "object",
        "properties": {
            "relation": {"enum": ["self", "first", "previous", "next", "last"]},
            "url": url,
        },
        "required": ["relation", "url"],
        "additionalProperties": False,
    }
    total = {"type": "integer", "minimum": 0}
    search_entry = {
        "type": "object",
        "properties": {
            "fullUrl": {"type": "string"},
            "resource": ref("ReadTask"),
            "search": {
                "type": "object",
                "properties": {"mode": {"enum": ["match", "include"]}},
                "required": ["mode"],
            },
        },
        "required": ["fullUrl", "resource", "search"],
        "additionalProperties": False,
    }
    history_entry = {
        "type": "object",
        "properties": {
            "fullUrl": {"type": "string"},
            "resource": ref("ReadTask"),
            "request": {
                "type": "object",
                "properties": {
                    "method": {"enum": ["POST", "PUT", "DELETE"]},
                    "url": {"type": "string"},
                },
                "required": ["method", "url"],
            },
            "response": {
                "type": "object",
                "properties": {
                    "status": {"enum": ["201 Created", "200 OK", "204 No Content"]},
                    "etag": {"type": "string", "pattern": ETAG_PATTERN},
                    "lastModified": {"type": "string"},
                },
                "required": ["status", "etag", "lastModified"],
            },
        },
        "required": ["fullUrl", "request", "response"],
        "additionalProperties": False,
        "description": "a delete (request.method DELETE) has no resource",
    }
    searchset = {
        "type": "object",
        "description": "A searchset; with _summary=count only resourceType, type and total",
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"const": "searchset"},
            "total": {**total, "description": "absent with _total=none"},
            "link": {
                "type": "array",
                "items": link,
                "minItems": 1,
                "description": "in canvas, none for an empty result",
            },
            "entry": {"type": "array", "items": search_entry, "minItems": 1},
        },
        "required": ["resourceType", "type"],
        "additionalProperties": False,
    }
    history = {
        "type": "object",
        "description": "Every version of one Task, newest first",
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"const": "history"},
            "total": total,
            "link": {"type": "array", "items": link, "minItems": 1},
            "entry": {"type": "array", "items": history_entry, "minItems": 1},
        },
        "required": ["resourceType", "type", "total"],
        "additionalProperties": False,
    }
    feed = {
        "type": "object",
        "description": "Changes to every Task (each a version, deletes included), newest first",
        "properties": {
            "resourceType": {"const": "Bundle"},
            "meta": {
                "type": "object",
                "properties": {
                    "lastUpdated": {
                        "type": "string",
                        "pattern": f"^{FHIR_INSTANT}$",
                        "description": "the feed is complete up to this instant: the next "
                        "poll's _since",
                    }
                },
                "required": ["lastUpdated"],
                "additionalProperties": False,
            },
            "type": {"const": "history"},
            "link": {"type": "array", "items": link, "minItems": 1},
            "entry": {"type": "array", "items": history_entry, "minItems": 1},
        },
        "required": ["resourceType", "meta", "type", "link"],
        "additionalProperties": False,
    }
    request_entry = {
        "type": "object",
        "properties": {
            "fullUrl": {"type": "string"},
            "resource": {"type": "object"},
            "request": {
                "type": "object",
                "properties": {
                    "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                    "url": {"type": "string", "description": "Task, Task?<search>, Task/<id>..."},
                    "ifMatch": {"type": "string"},
                    "ifNoneExist": {"type": "string"},
                    "ifNoneMatch": {"type": "string"},
                },
                "required": ["method", "url"],
            },
        },
        "required": ["request"],
    }
    transaction_bundle = {
        "type": "object",
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["batch", "transaction"]},
            "entry": {"type": "array", "items": request_entry},
        },
        "required": ["resourceType", "type"],
    }
    response_entry = {
        "type": "object",
        "properties": {
            "fullUrl": {"type": "string"},
            "resource": {"type": "object"},
            "response": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "pattern": "^[1-5][0-9][0-9]( |$)"},
                    "location": {"type": "string"},
                    "etag": {"type": "string", "pattern": ETAG_PATTERN},
                    "lastModified": {"type": "string"},
                    "outcome": ref("OperationOutcome"),
                },
                "required": ["status"],
            },
        },
        "required": ["response"],
        "additionalProperties": False,
    }
    response_bundle = {
        "type": "object",
        "description": "entry i answers the request's entry i",
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["batch-response", "transaction-response"]},
            "entry": {"type": "array", "items": response_entry},
        },
        "required": ["resourceType", "type", "entry"],
        "additionalProperties": False,
    }
    return {
        "SearchsetBundle": searchset,
        "HistoryBundle": history,
        "ChangeFeedBundle": feed,
        "TransactionBundle": transaction_bundle,
        "ResponseBundle": response_bundle,
    }


def _patch_schemas() -> dict[str, Schema]:
    # a few operations each (the server takes up to MAX_OPERATIONS): keeps generated bodies small
    pointer = {"type": "string", "pattern": "^(/[^/]*)*$"}

    def operation(ops: list[str], *needs: str) -> Schema:
        properties = {"op": {"enum": ops}, "path": pointer, "from": pointer, "value": {}}
        return {"type": "object", "properties": properties, "required": ["op", "path", *needs]}

    operations = {
        "anyOf": [
            operation(["remove"]),
            operation(["add", "replace", "test"], "value"),
            operation(["move", "copy"], "from"),
        ]
    }
    part = {
        "type": "object",
        "properties": {
            "name": {"enum": ["type", "path", "name", "value", "index", "source", "destination"]},
            "valueCode": {"enum": ["add", "insert", "delete", "replace", "move"]},
            "valueString": {"type": "string", "minLength": 1},
            "valueInteger": {"type": "integer", "minimum": 0},
        },
        "required": ["name"],
    }
    parameter = {
        "type": "object",
        "properties": {
            "name": {"const": "operation"},
            "part": {"type": "array", "items": part, "minItems": 1, "maxItems": 6},
        },
        "required": ["name", "part"],
    }
    return {
        "JsonPatch": {
            "type": "array",
            "description": f"RFC 6902 operations (at most {MAX_OPERATIONS})",
            "items": operations,
            "maxItems": 3,
        },
        "FhirPathPatch": {
            "type": "object",
            "description": f"FHIR's FHIRPath Patch (at most {MAX_OPERATIONS} operations)",
            "properties": {
                "resourceType": {"const": "Parameters"},
                "parameter": {"type": "array", "items": parameter, "minItems": 1, "maxItems": 3},
            },
            "required": ["resourceType", "parameter"],
        },
        "ValidateParameters": {
            "type": "object",
            "description": "FHIR's Resource-validate parameters",
            "properties": {
                "resourceType": {"const": "Parameters"},
                "parameter": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"enum": ["resource", "mode"]},
                            "resource": ref("Task"),
                            "valueCode": {"enum": ["create", "update"]},
                        },
                        "required": ["name"],
                    },
                    "minItems": 1,
                    "maxItems": 2,
                },
            },
            "required": ["resourceType", "parameter"],
        },
    }


def _other_schemas() -> dict[str, Schema]:
    issue = {
        "type": "object",
        "properties": {
            "severity": {"enum": ["fatal", "error", "warning", "information"]},
            "code": {"type": "string", "pattern": CODE_PATTERN},
            "details": {
                "type": "object",
                "properties": {"text": {"type": "string", "minLength": 1}},
                "required": ["text"],
            },
            "expression": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["severity", "code", "details"],
    }
    return {
        "OperationOutcome": {
            "type": "object",
            "description": "Every 4xx and 5xx of the FHIR endpoints",
            "properties": {
                "resourceType": {"const": "OperationOutcome"},
                "issue": {"type": "array", "items": issue, "minItems": 1},
            },
            "required": ["resourceType", "issue"],
        },
        "CapabilityStatement": {
            "type": "object",
            "properties": {
                "resourceType": {"const": "CapabilityStatement"},
                "fhirVersion": {"const": "4.0.1"},
                "rest": {"type": "array", "minItems": 1},
            },
            "required": ["resourceType", "status", "kind", "fhirVersion", "format", "rest"],
        },
        "TokenRequest": {
            "type": "object",
            "properties": {
                "grant_type": {
                    "enum": ["client_credentials", "authorization_code", "refresh_token"]
                },
                "client_id": {"type": "string"},
                "client_secret": {"type": "string"},
                "scope": {"type": "string", "description": "SMART system scopes on Task"},
                "code": {"type": "string"},
                "redirect_uri": {"type": "string"},
                "code_verifier": {"type": "string"},
                "refresh_token": {"type": "string"},
            },
            "required": ["grant_type"],
            "description": (
                "client_credentials: client_id and client_secret here or as HTTP Basic "
                "credentials; authorization_code: code, redirect_uri, client_id, "
                "code_verifier (PKCE); refresh_token: refresh_token, client_id"
            ),
        },
        "TokenResponse": {
            "type": "object",
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer", "minimum": 1},
                "scope": {"type": "string"},
                # a person's (authorization code and refresh token grants)
                "refresh_token": {"type": "string"},
                "fhirUser": {"type": "string"},
                "username": {"type": "string"},
                "teams": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["access_token", "token_type", "expires_in", "scope"],
            "additionalProperties": False,
        },
        "OAuthError": {
            "type": "object",
            "description": "RFC 6749 section 5.2",
            "properties": {
                "error": {
                    "enum": [
                        "invalid_request",
                        "invalid_client",
                        "invalid_grant",
                        "unsupported_grant_type",
                        "invalid_scope",
                        "temporarily_unavailable",
                    ]
                },
                "error_description": {"type": "string"},
            },
            "required": ["error"],
        },
        "Health": {
            "type": "object",
            "properties": {"status": {"enum": ["ok", "ready"]}},
            "required": ["status"],
            "additionalProperties": False,
        },
        "Subscription": {
            "type": "object",
            "description": "An R4 topic-based Subscription (Subscriptions Backport IG)",
            "properties": {
                "resourceType": {"const": "Subscription"},
                "id": {"type": "string", "pattern": ID_PATTERN},
                "status": {"enum": ["requested", "active", "error", "off"]},
                "reason": {"type": "string"},
                "criteria": {"type": "string"},
                "channel": {
                    "type": "object",
                    "properties": {
                        "type": {"enum": ["rest-hook", "websocket"]},
                        "endpoint": {"type": "string"},
                        "payload": {"type": "string"},
                        "header": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["type"],
                },
            },
            "required": ["resourceType", "status", "reason", "criteria", "channel"],
        },
        "SubscriptionBundle": {
            "type": "object",
            "description": "A searchset of Subscriptions or SubscriptionStatus Parameters, or a "
            "history Bundle of notifications ($events)",
            "properties": {
                "resourceType": {"const": "Bundle"},
                "type": {"enum": ["searchset", "history"]},
                "entry": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["resourceType", "type"],
        },
        "Parameters": {
            "type": "object",
            "properties": {
                "resourceType": {"const": "Parameters"},
                "parameter": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["resourceType"],
        },
        "SmartConfiguration": {
            "type": "object",
            "properties": {
                "issuer": {"type": "string"},
                "authorization_endpoint": {"type": "string"},
                "token_endpoint": {"type": "string"},
                "grant_types_supported": {"type": "array", "items": {"type": "string"}},
                "code_challenge_methods_supported": {"type": "array", "items": {"type": "string"}},
                "capabilities": {"type": "array", "items": {"type": "string"}},
                "scopes_supported": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["token_endpoint", "grant_types_supported", "scopes_supported"],
        },
    }


# --- search parameters ---------------------------------------------------------------------


def _values(one: str, most: int | None = None) -> str:
    """A comma-separated list (OR) of values of the form `one`, at most `most` of them."""
    repeat = "*" if most is None else f"{{0,{most - 1}}}"
    return f"^{one}(,{one}){repeat}$"


def _search_value_pattern(pdef: ParamDef) -> str:
    if pdef.type == "date":
        prefixes = "|".join(sorted(DATE_PREFIXES))
        return _values(f"({prefixes})?{FHIR_DATE_TIME}")
    if pdef.type == "reference":
        return _values(f"({TYPE_PATTERN.pattern}/)?{_REF_ID}")
    if pdef.type == "string":
        return _values("[^,\\u0000]+")
    if pdef.codes is not None:
        codes = "|".join(sorted(pdef.codes))
        return _values(f"({re.escape(pdef.system or '')}\\|)?({codes})")
    if pdef.name == "_id":
        return _values(_REF_ID)
    return _values("([^,|\\u0000]*\\|)?[^,|\\u0000]+")


def _search_properties() -> dict[str, Schema]:
    """Each parameter (a repeated one ANDs its conditions) and the result parameters."""
    out: dict[str, Schema] = {}
    for name, pdef in PARAMETERS.items():
        value = {"type": "string", "pattern": _search_value_pattern(pdef)}
        out[name] = {
            "type": "array",
            "items": value,
            "minItems": 1,
            "maxItems": 3,
            "description": f"{pdef.type}: {pdef.description}",
        }
        if pdef.type == "string":
            for modifier in ("exact", "contains"):
                out[f"{name}:{modifier}"] = {"type": "array", "items": value, "maxItems": 3}
    for name in ("owner", "patient", "due", "priority", "code"):
        out[f"{name}:missing"] = {"type": "string", "enum": ["true", "false"]}
    out["status:not"] = {"type": "string", "pattern": _search_value_pattern(PARAMETERS["status"])}
    sortable = "|".join([*(p for p, d in PARAMETERS.items() if d.sortable), *SORT_ALIASES])
    includes = "|".join(sorted(INCLUDABLE))
    include = _values(f"Task:({includes})(:Task)?", MAX_INCLUDE_VALUES)
    out.update(
        {
            "_count": {
                "type": "integer",
                "minimum": 0,
                "maximum": 10**12,
                "description": "page size: default 10, larger than 100 is clamped to 100",
            },
            "_offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
            "_sort": {"type": "string", "pattern": _values(f"-?({sortable})", MAX_SORT_KEYS)},
            "_total": {"type": "string", "enum": ["none", "estimate", "accurate"]},
            **_subset_properties(search=True),
            "_include": {"type": "string", "pattern": include},
            "_revinclude": {"type": "string", "pattern": include},
        }
    )
    return out


def _subset_properties(*, search: bool) -> dict[str, Schema]:
    """What a search or a read returns of each Task, and how (domain.subsetting; the
    formats of http.negotiation, `_pretty` of http.responses)."""
    summaries = [v for v in SUMMARY_VALUES if search or v != "count"]
    return {
        "_summary": {
            "type": "string",
            "enum": summaries,
            "description": "true: the elements FHIR marks as summary; text: text, id, meta "
            "and the mandatory elements; data: all but text"
            + ("; count: the total only" if search else "")
            + "; not with _elements",
        },
        "_elements": {
            "type": "string",
            "pattern": _values("[A-Za-z][A-Za-z0-9]{0,63}", MAX_ELEMENTS),
            "description": "the top-level elements to return; id, meta, status and intent "
            "are always returned",
        },
        "_format": {
            "type": "string",
            "enum": ["json", "application/json", FHIR_JSON],
            "description": "JSON only: another format (xml...) is a 406",
        },
        "_pretty": {
            "type": "string",
            "enum": ["true", "false"],
            "description": "true: the JSON indented",
        },
    }


def subset_query(*, count: bool = False) -> tuple[Schema, ...]:
    """A read's query parameters (`count`: and _summary=count, as a history takes)."""
    return tuple(
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in _subset_properties(search=count).items()
    )


def _query_parameters() -> list[Schema]:
    params = []
    for name, schema in _search_properties().items():
        param: Schema = {"name": name, "in": "query", "required": False, "schema": schema}
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        params.append(param)
    return params


# --- operations: the vocabulary of the route table's entries (http.routes) ------------------


@dataclass(frozen=True)
class Operation:
    """What the document says of one route."""

    id: str
    summary: str
    responses: dict[str, Schema]
    parameters: tuple[Schema, ...] = ()
    body: Schema | None = None
    # the parameters every method on the path shares, said once on the path
    path_parameters: tuple[Schema, ...] = ()

    def render(self, token: bool) -> Schema:
        out: Schema = {
            "operationId": self.id,
            "summary": self.summary,
            "security": BEARER if token else [],
        }
        if self.parameters:
            out["parameters"] = list(self.parameters)
        if self.body is not None:
            out["requestBody"] = self.body
        out["responses"] = self.responses
        return out


def outcome(description: str, headers: dict[str, Schema] | None = None) -> Schema:
    out: Schema = {
        "description": description,
        "content": {FHIR_JSON: {"schema": ref("OperationOutcome")}},
    }
    if headers:
        out["headers"] = headers
    return out


def fhir(schema: str, description: str, headers: dict[str, Schema] | None = None) -> Schema:
    out: Schema = {"description": description, "content": {FHIR_JSON: {"schema": ref(schema)}}}
    if headers:
        out["headers"] = headers
    return out


def json_body(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _header(schema: Schema, description: str, required: bool = True) -> Schema:
    return {"schema": schema, "description": description, "required": required}


ETAG = _header({"type": "string", "pattern": ETAG_PATTERN}, 'the version, W/"<n>"')
LAST_MODIFIED = _header({"type": "string"}, "when this version was stored (RFC 7231 date)")
LOCATION = _header({"type": "string"}, "the Task's URL (after an update, the version's)")
_CHALLENGE = _header({"type": "string", "pattern": "^Bearer "}, "the Bearer challenge")
RETRY_AFTER = _header({"type": "string", "pattern": "^[0-9]+$"}, "seconds to wait")
WRITTEN_HEADERS = {"Location": LOCATION, "ETag": ETAG, "Last-Modified": LAST_MODIFIED}
VERSION_HEADERS = {"ETag": ETAG, "Last-Modified": LAST_MODIFIED}


def bundle_too_large() -> Schema:
    """A Bundle's 413, with the limits a server has unless configured."""
    return outcome(
        "the body is larger than the Bundle limit (CARETASK_MAX_BUNDLE_BYTES, "
        f"{byte_size(_default('max_bundle_bytes'))} by default), or the Bundle has more "
        f"entries than allowed (CARETASK_MAX_BUNDLE_ENTRIES, {_default('max_bundle_entries')} "
        "by default)"
    )


def _default(setting: str) -> Any:
    """A setting's default: the document states the limits a server has unless configured."""
    return next(f.default for f in dataclasses.fields(Settings) if f.name == setting)


def byte_size(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def errors(*statuses: int) -> dict[str, Schema]:
    """The error answers of a FHIR endpoint, each an OperationOutcome."""
    timeout, body_bytes = _default("body_timeout"), _default("max_body_bytes")
    texts = {
        304: "",
        400: "bad request: malformed body, parameter or header, or a Host not allowed",
        401: "no, malformed, forged or expired token, or a revoked client",
        403: "the token lacks the scope",
        404: "no such Task or version",
        406: "Accept names only formats other than FHIR JSON",
        410: "the Task was deleted (or the version read is its deletion)",
        408: f"the body did not arrive within the body timeout ({timeout:g} s by default)",
        412: "If-Match is not the current version, the Task changed after If-Unmodified-Since, "
        "or a conditional request's search matched more than one Task",
        413: f"the body is larger than the limit ({byte_size(body_bytes)} by default)",
        414: "the URL is longer than the limit",
        415: "the body's Content-Type or Content-Encoding is not accepted",
        422: "a status the profile does not support (canvas: requested, cancelled, completed)",
        431: "too many or too large request headers",
        503: "the database cannot answer now (unreachable, its disk full); see Retry-After",
    }
    out = {}
    for status in statuses:
        headers = {"WWW-Authenticate": _CHALLENGE} if status == 401 else None
        if status == 503:
            headers = {"Retry-After": RETRY_AFTER}
        out[str(status)] = outcome(texts[status], headers)
    return out


# what the HTTP edge answers before any route: a Host not allowed (400), and the limits
EDGE_ERRORS = (400, 414, 431)
FHIR_ERRORS = (*EDGE_ERRORS, 401, 403, 406, 503)
BODY_ERRORS = (408, 413, 415)
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]

PREFER_WRITE = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["return=minimal", "return=representation"]},
    "description": "return=representation answers with the stored Task",
}
PREFER_SEARCH = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["handling=strict", "handling=lenient"]},
    "description": "handling=lenient ignores unknown parameters instead of a 400",
}
PAGING = (
    {"name": "_count", "in": "query", "required": False, "schema": _search_properties()["_count"]},
    {
        "name": "_offset",
        "in": "query",
        "required": False,
        "schema": _search_properties()["_offset"],
    },
)


_INSTANT_VALUE = {"type": "string", "pattern": f"^{FHIR_DATE_TIME}$"}
FEED_QUERY = (
    {
        "name": "_since",
        "in": "query",
        "required": False,
        "schema": _INSTANT_VALUE,
        "description": "only versions stored at or after this instant (a Bundle's "
        "meta.lastUpdated: the previous poll's)",
    },
    {
        "name": "_at",
        "in": "query",
        "required": False,
        "schema": _INSTANT_VALUE,
        "description": "only versions that were current at some time within this date",
    },
    PAGING[0],
    {
        "name": "_cursor",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
        "description": "where a next link resumes (opaque)",
    },
)


def request_header(name: str, schema: Schema, description: str) -> Schema:
    """An optional request header."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": schema,
        "description": description,
    }


def path_parameter(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


TASK_ID = path_parameter("id", {"type": "string", "pattern": ID_PATTERN})


def task_body(description: str) -> Schema:
    media = {"schema": ref("Task")}
    return {
        "required": True,
        "description": description,
        "content": {FHIR_JSON: media, "application/json": media},
    }


def patch_body() -> Schema:
    """A PATCH's body: a JSON Patch, or a FHIRPath Patch in FHIR JSON."""
    fhirpath = {"schema": ref("FhirPathPatch")}
    return {
        "required": True,
        "description": "a JSON Patch (RFC 6902), or a FHIRPath Patch (a Parameters resource)",
        "content": {JSON_PATCH: {"schema": ref("JsonPatch")}, FHIR_JSON: fhirpath, JSON: fhirpath},
    }


def validate_body() -> Schema:
    media = {"schema": {"anyOf": [ref("Task"), ref("ValidateParameters")]}}
    return {
        "required": True,
        "description": "the Task, or a Parameters with it as 'resource' (and 'mode')",
        "content": {FHIR_JSON: media, JSON: media},
    }


def fhir_body(schema: str, description: str) -> Schema:
    media = {"schema": ref(schema)}
    return {
        "required": True,
        "description": description,
        "content": {FHIR_JSON: media, "application/json": media},
    }


def form_body(schema: Schema) -> Schema:
    return {"required": True, "content": {FORM: {"schema": schema}}}


def written(description: str) -> Schema:
    """Empty by default; the stored Task with Prefer: return=representation."""
    return {
        "description": description + " (a body only with Prefer: return=representation)",
        "headers": WRITTEN_HEADERS,
        "content": {FHIR_JSON: {"schema": ref("StoredTask")}},
    }


def search_query() -> tuple[Schema, ...]:
    return (*_query_parameters(), PREFER_SEARCH)


def condition_query() -> tuple[Schema, ...]:
    """A conditional interaction's search: the search parameters (at least one that selects
    tasks; the server refuses none with a 400)."""
    return tuple(_query_parameters())


def search_form() -> Schema:
    return form_body(
        {"type": "object", "properties": _search_properties(), "additionalProperties": False}
    )


def search_responses() -> dict[str, Schema]:
    return {
        "200": fhir("SearchsetBundle", "the matching Tasks, one page"),
        **errors(*FHIR_ERRORS),
        "503": outcome(
            "the search ran past the search timeout (CARETASK_SEARCH_TIMEOUT) and was stopped",
            {"Retry-After": RETRY_AFTER},
        ),
    }


HTML = "text/html"


def html(description: str, headers: dict[str, Schema] | None = None) -> Schema:
    out: Schema = {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}
    if headers:
        out["headers"] = headers
    return out


def authorize_responses(post: bool, max_form_bytes: int) -> dict[str, Schema]:
    """The sign-in endpoint's answers: pages, and redirects back to the app."""
    location = {"Location": _header({"type": "string"}, "the app's redirect URI")}
    responses: dict[str, Schema] = {
        "302": {
            "description": "an error sent back to the app (error=, state=)",
            "headers": location,
        },
        "400": html("unknown client, or a redirect URI it did not register: never redirected"),
        **errors(414, 431),
    }
    responses["400"]["content"].update(errors(400)["400"]["content"])
    if not post:
        return {"200": html("the sign-in form"), **responses}
    return {
        "303": {
            "description": "signed in: back to the app with code and state",
            "headers": location,
        },
        **responses,
        "401": html("wrong username or password: the form again"),
        "413": outcome(f"the form is larger than {byte_size(max_form_bytes)}"),
        "415": outcome("the form is in a Content-Encoding other than identity"),
        "429": html("too many attempts; see Retry-After", {"Retry-After": RETRY_AFTER}),
        "503": html("too many password checks at once; see Retry-After"),
    }


def token_responses(max_form_bytes: int) -> dict[str, Schema]:
    """OAuth errors as RFC 6749 has them, and the edge's as OperationOutcomes."""
    responses: dict[str, Schema] = {
        "200": json_body(ref("TokenResponse"), "an access token"),
        **{
            str(status): json_body(ref("OAuthError"), text)
            for status, text in (
                (400, "not a form, no or another grant type, or a scope beyond the client's"),
                (401, "unknown client or wrong secret"),
                (429, "too many failed or unfinished attempts; see Retry-After"),
                (503, "too many secret checks at once; see Retry-After"),
            )
        },
        "413": outcome(f"the form is larger than {byte_size(max_form_bytes)}"),
        "415": outcome("the form is in a Content-Encoding other than identity"),
        **errors(414, 431, 503),
    }
    # a Host not allowed is refused before the endpoint: an OperationOutcome
    responses["400"]["content"].update(errors(400)["400"]["content"])
    return responses


# a write's answer without Prefer, in each profile
_WRITTEN = {
    profiles.CANVAS: "{} (a body only with Prefer: return=representation)",
    profiles.FHIR: "{}, with the stored Task (no body with Prefer: return=minimal)",
}


def _profiled(paths: dict[str, Schema], profile: Profile) -> dict[str, Schema]:
    """The route table's paths with what depends on the profile: a create's 201 and an
    update's 200."""
    out: dict[str, Schema] = {}
    for path, item in paths.items():
        out[path] = dict(item)
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {})
            for status, verb in (("201", "created"), ("200", "updated")):
                if status in responses and (status == "201" or method in ("put", "patch")):
                    written = {**responses[status], "description": _WRITTEN[profile].format(verb)}
                    responses = {**responses, status: written}
            out[path][method] = {**operation, "responses": responses}
    return out


def openapi_document(
    base: str, paths: dict[str, Schema], profile: Profile = profiles.DEFAULT
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a server whose public URL is `base`, with the route
    table's `paths`, true to the `profile` it runs."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "caretask",
            "version": __version__,
            "description": "A FHIR R4 Task server that speaks the Canvas Medical Task API; "
            + profiles.DESCRIPTION[profile],
        },
        "servers": [{"url": base}],
        "security": BEARER,
        "paths": _profiled(paths, profile),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "an access token from POST /auth/token/",
                }
            },
            "schemas": {
                **_types(True),
                **_types(False),
                **_task_schemas(profile),
                **_bundle_schemas(profile),
                **_patch_schemas(),
                **_other_schemas(),
            },
        },
    }
