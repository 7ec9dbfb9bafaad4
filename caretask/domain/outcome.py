"""OperationOutcome rendering."""

from __future__ import annotations

from typing import Any

from caretask.domain.errors import Issue


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "details": {"text": issue.text},
        }
        if issue.diagnostics:
            item["diagnostics"] = issue.diagnostics
        if issue.expression:
            item["expression"] = [issue.expression]
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out}


def outcome(
    code: str, text: str, expression: str | None = None, diagnostics: str | None = None
) -> dict[str, Any]:
    return operation_outcome([Issue(code, text, expression, diagnostics=diagnostics)])
