"""The public API as an agent calls it: request bodies, the one submit helper, receipts, rate-limit headers."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

from freezegun import freeze_time
from rest_framework.test import APIClient

from tests.helpers.inputs import DECISION_INPUTS, DIAGNOSTIC_OK

UUID4_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def body(
    pack_type: str = "diagnostic",
    inputs: Any = None,
    *,
    max_cost_usd: Any = "0.0500",
    timebox_sec: Any = None,
    trace_id: str | None = None,
) -> dict[str, Any]:
    """A POST /v1/runs body; diagnostic (succeed, 0.0300) unless told otherwise."""
    if inputs is None:
        inputs = DECISION_INPUTS if pack_type == "decision" else DIAGNOSTIC_OK
    reservation: dict[str, Any] = {"max_cost_usd": max_cost_usd}
    if timebox_sec is not None:
        reservation["timebox_sec"] = timebox_sec
    result: dict[str, Any] = {"pack_type": pack_type, "inputs": inputs, "reservation": reservation}
    if trace_id is not None:
        result["meta"] = {"trace_id": trace_id}
    return result


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


def submit(
    client: APIClient, payload: Any = None, *, key: str | None = None, raw: str | None = None, **headers: str
) -> Any:
    """POST /v1/runs with an Idempotency-Key (a fresh one unless given; "" sends none) and any other `headers`
    (WSGI names: HTTP_ACCEPT=…)."""
    key = new_key() if key is None else key
    extra: dict[str, Any] = {**headers, "HTTP_IDEMPOTENCY_KEY": key} if key else dict(headers)
    data = raw if raw is not None else json.dumps(body() if payload is None else payload)
    return client.post("/v1/runs", data=data, content_type="application/json", **extra)


def accepted(client: APIClient, payload: Any = None, *, key: str | None = None) -> dict[str, Any]:
    """A submit that must be accepted; its receipt."""
    response = submit(client, payload, key=key)
    assert response.status_code == 202, response.content
    receipt: dict[str, Any] = response.json()
    return receipt


def accepted_at(client: APIClient, moment: str | datetime, payload: Any = None) -> str:
    """A submit accepted with the clock at `moment` (its created_at); its run id."""
    with freeze_time(moment):
        return str(accepted(client, payload)["run_id"])


def assert_rate_headers(response: Any, policy: str, limit: int) -> tuple[int, int]:
    """RateLimit-Policy and RateLimit (IETF draft) for `policy`; (remaining, reset seconds)."""
    assert response["RateLimit-Policy"] == f'"{policy}";q={limit};w=60'
    match = re.fullmatch(rf'"{policy}";r=(\d+);t=(\d+)', response["RateLimit"])
    assert match is not None, response["RateLimit"]
    remaining, reset = int(match.group(1)), int(match.group(2))
    assert 0 <= remaining <= limit
    assert 0 <= reset <= 60
    return remaining, reset


def header_tokens(response: Any, name: str) -> set[str]:
    """The comma-separated members of header `name`, lower-cased (header names compare without case)."""
    return {token.strip().lower() for token in response[name].split(",")}
