"""RFC 9457 problems as SPEC §4.1 shapes them."""

from __future__ import annotations

import json
from typing import Any

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance", "reason_code", "trace_id"}


def assert_problem(response: Any, status: int, reason: str) -> dict[str, Any]:
    """An RFC 9457 problem with every member of SPEC §4.1; its body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem: dict[str, Any] = json.loads(response.content)
    assert problem.keys() >= PROBLEM_MEMBERS
    assert problem["status"] == status
    assert problem["reason_code"] == reason
    assert problem["type"] == "/problems/" + reason.lower().replace("_", "-")
    assert problem["trace_id"] == response["X-Trace-Id"]
    assert problem["instance"] == response.wsgi_request.path
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert isinstance(problem["detail"], str)
    assert problem["detail"]
    return problem


def field_errors(problem: dict[str, Any]) -> list[str]:
    return [error["field"] for error in problem["errors"]]


def without_request_members(problem: dict[str, Any]) -> dict[str, Any]:
    """A problem without the members that name the request (instance, trace_id)."""
    return {name: value for name, value in problem.items() if name not in ("instance", "trace_id")}
