"""A FHIR `Parameters` body, as the operations take it ($claim, $events, $status...)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.parameters import Parameters as ParametersModel

from caretask.domain.errors import InvalidRequest, InvalidResource, Issue
from caretask.domain.task_rules import MAX_DEPTH, structure_issues


def checked(body: Any, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """The body, if it is a FHIR R4 Parameters resource; else a 400 naming what is wrong
    (another resource, or the element of the Parameters at fault)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest.single("structure", "the body must be a Parameters resource")
    issues = structure_issues(body, ParametersModel, max_depth)
    if issues:
        raise InvalidResource(
            [
                Issue(i.code, i.text, (i.expression or "").replace("Task", "Parameters", 1))
                for i in issues
            ]
        )
    return body
