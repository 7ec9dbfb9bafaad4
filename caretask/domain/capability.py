"""The CapabilityStatement: exactly what this server does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from caretask import __version__
from caretask.domain import claims, profiles
from caretask.domain.patch import JSON_PATCH
from caretask.domain.profiles import Profile
from caretask.domain.search_params import INCLUDABLE, PARAMETERS
from caretask.domain.subscriptions import TOPIC, TOPIC_CANONICAL

_TYPE_DEFINITIONS = {
    "_id": "http://hl7.org/fhir/SearchParameter/Resource-id",
    "_lastUpdated": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
    "owner": "http://hl7.org/fhir/SearchParameter/Task-owner",
    "patient": "http://hl7.org/fhir/SearchParameter/Task-patient",
    "requester": "http://hl7.org/fhir/SearchParameter/Task-requester",
    "status": "http://hl7.org/fhir/SearchParameter/Task-status",
    "intent": "http://hl7.org/fhir/SearchParameter/Task-intent",
    "subject": "http://hl7.org/fhir/SearchParameter/Task-subject",
    "authored-on": "http://hl7.org/fhir/SearchParameter/Task-authored-on",
}


# FHIR's restful interactions on a type, in the order its value set lists them
TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
# and on the whole system, in the same value set's order
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")


def capability_statement(
    base: str,
    software_date: str,
    interactions: Iterable[str],
    profile: Profile = profiles.DEFAULT,
    *,
    cors: bool = False,
    subscription_interactions: Iterable[str] = (),
    operations: Iterable[str] = (),
) -> dict[str, Any]:
    """`interactions`: the Task interactions the server's routes serve; `cors`: whether
    browser apps of other origins may call it. The profile that runs is named in
    implementation.description ("... profile canvas ..." or "... profile fhir ...")."""
    served = set(interactions)
    listed = [{"name": name, "definition": _OPERATION_DEFINITIONS[name]} for name in operations]
    patch_formats = {"patchFormat": [JSON_PATCH, "application/fhir+json"]}
    params = []
    for name, pdef in PARAMETERS.items():
        item: dict[str, Any] = {"name": name, "type": pdef.type, "documentation": pdef.description}
        if name in _TYPE_DEFINITIONS:
            item["definition"] = _TYPE_DEFINITIONS[name]
        params.append(item)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": software_date,
        "kind": "instance",
        "software": {"name": "caretask", "version": __version__},
        "implementation": {"description": profiles.DESCRIPTION[profile], "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        **(patch_formats if "patch" in served else {}),
        "rest": [
            {
                "mode": "server",
                **_system_interactions(served),
                "security": {
                    "cors": cors,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [
                                {"url": "token", "valueUri": f"{base}/auth/token/"},
                                {"url": "authorize", "valueUri": f"{base}/auth/authorize"},
                            ],
                        }
                    ],
                    "description": (
                        "OAuth 2.0 client credentials (SMART system scopes), and people's "
                        "sign-in: authorization code with PKCE (SMART user scopes)"
                    ),
                },
                "resource": [
                    {
                        "type": "Task",
                        "profile": "http://hl7.org/fhir/StructureDefinition/Task",
                        "interaction": [
                            {"code": code} for code in TYPE_INTERACTIONS if code in served
                        ],
                        "versioning": "versioned-update",
                        "readHistory": True,
                        "updateCreate": False,
                        "conditionalCreate": True,
                        "conditionalUpdate": True,
                        "conditionalDelete": "single",
                        "searchInclude": sorted(f"Task:{p}" for p in INCLUDABLE),
                        "searchRevInclude": sorted(f"Task:{p}" for p in INCLUDABLE),
                        "searchParam": params,
                        **({"operation": listed} if listed else {}),
                    },
                    *_subscription_resource(set(subscription_interactions)),
                ],
            }
        ],
    }


# the Task operations' definitions: FHIR's, and this server's (domain.claims)
_OPERATION_DEFINITIONS = {
    "validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    **{name: claims.DEFINITION.format(name) for name in claims.PARAMETERS},
}

_BACKPORT_OPERATIONS = ("status", "events", "get-ws-binding-token")


def _subscription_resource(served: set[str]) -> list[dict[str, Any]]:
    """The Subscription entry: the topic it publishes (the Backport IG's extension), its
    interactions, and the IG's operations."""
    if not served:
        return []
    ig = "http://hl7.org/fhir/uv/subscriptions-backport"
    return [
        {
            "extension": [{"url": TOPIC_CANONICAL, "valueCanonical": TOPIC}],
            "type": "Subscription",
            "supportedProfile": [f"{ig}/StructureDefinition/backport-subscription"],
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS if code in served],
            "searchParam": [
                {
                    "name": "url",
                    "type": "uri",
                    "definition": "http://hl7.org/fhir/SearchParameter/Subscription-url",
                },
                {
                    "name": "status",
                    "type": "token",
                    "definition": "http://hl7.org/fhir/SearchParameter/Subscription-status",
                },
            ],
            "operation": [
                {
                    "name": name,
                    "definition": f"{ig}/OperationDefinition/backport-subscription-{name}",
                }
                for name in _BACKPORT_OPERATIONS
            ],
        }
    ]


def _system_interactions(served: set[str]) -> dict[str, Any]:
    codes = [{"code": code} for code in SYSTEM_INTERACTIONS if code in served]
    return {"interaction": codes} if codes else {}


_PERMISSIONS = ("read", "write", "*", "rs", "cu", "cruds")


def smart_configuration(base: str) -> dict[str, Any]:
    """SMART App Launch's discovery document (/.well-known/smart-configuration)."""
    resource_scopes = [
        f"{context}/{resource}.{permission}"
        for context in ("system", "user")
        for resource in ("Task", "Subscription")
        for permission in _PERMISSIONS
    ]
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/auth/authorize",
        "token_endpoint": f"{base}/auth/token/",
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "client_secret_basic",
            "none",
        ],
        "scopes_supported": [
            *resource_scopes,
            "system/*.*",
            "user/*.*",
            "offline_access",
            "online_access",
        ],
        "capabilities": [
            "launch-standalone",
            "client-public",
            "client-confidential-symmetric",
            "permission-offline",
            "permission-online",
            "permission-user",
            "permission-v1",
            "permission-v2",
        ],
    }
