"""OperationOutcome rendering."""

from __future__ import annotations

import re
from typing import Any

from caretask.domain.errors import Issue

# a FHIR string holds no control character but tab, CR and LF; an issue may quote what a
# client sent (an element name with a NUL in it), so such characters are written escaped
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _fhir_string(text: str) -> str:
    return _CONTROL.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "details": {"text": _fhir_string(issue.text)},
        }
        if issue.diagnostics:
            item["diagnostics"] = _fhir_string(issue.diagnostics)
        if issue.expression:
            item["expression"] = [_fhir_string(issue.expression)]
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out}


def outcome(
    code: str, text: str, expression: str | None = None, diagnostics: str | None = None
) -> dict[str, Any]:
    return operation_outcome([Issue(code, text, expression, diagnostics=diagnostics)])
