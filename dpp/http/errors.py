"""The one error type of the platform and the catalogue of problems (SPEC §4.1).

A service raises `ApplicationError(reason_code, detail)`; one exception handler turns it into an RFC 9457
`application/problem+json` response whose `type` is `/problems/<slug>`, a page that explains the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProblemType:
    status: int
    title: str
    description: str

    @staticmethod
    def slug(reason_code: str) -> str:
        return reason_code.lower().replace("_", "-")


PROBLEMS: dict[str, ProblemType] = {
    "MALFORMED_JSON": ProblemType(400, "Malformed JSON", "The request body is not valid JSON."),
    "IDEMPOTENCY_KEY_MISSING": ProblemType(
        400, "Idempotency-Key missing", "POST /v1/runs needs an Idempotency-Key header (8-64 chars)."
    ),
    "IDEMPOTENCY_KEY_INVALID": ProblemType(
        400, "Idempotency-Key invalid", "The Idempotency-Key must be 8-64 characters of [A-Za-z0-9_.:-]."
    ),
    "BAD_REQUEST": ProblemType(400, "Bad request", "The request could not be understood."),
    "UNAUTHENTICATED": ProblemType(
        401,
        "Unauthenticated",
        "Send `Authorization: Bearer <api key>` with a valid, unrevoked key (dpp_live_… or dpp_test_…).",
    ),
    "INSUFFICIENT_FUNDS": ProblemType(
        402,
        "Insufficient funds",
        "The available balance does not cover the reservation; nothing was created. Top up, then retry "
        "with the same Idempotency-Key.",
    ),
    "KEY_SPEND_LIMIT": ProblemType(
        402,
        "Key spend limit reached",
        "This submit would take the spend of your API key (or of a key above it) over its limit in the current "
        "window; `key_prefix` names that key, `resets_at` when its window restarts (null: it never does).",
    ),
    "PACK_NOT_ALLOWED": ProblemType(
        403, "Pack not allowed", "Your plan, or the limits of your API key, do not include this pack."
    ),
    "KEY_CANNOT_MANAGE_KEYS": ProblemType(
        403, "Key cannot manage keys", "This API key may not create, change or revoke keys (can_manage_keys)."
    ),
    "TENANT_SUSPENDED": ProblemType(403, "Tenant suspended", "This tenant is suspended; contact support."),
    "FORBIDDEN": ProblemType(
        403,
        "Forbidden",
        "Your API key may not do this: e.g. webhook endpoints belong to the tenant, and only a key without a "
        "parent manages them.",
    ),
    "NOT_FOUND": ProblemType(404, "Not found", "There is no such resource, or it is not yours."),
    "METHOD_NOT_ALLOWED": ProblemType(
        405, "Method not allowed", "This path does not accept that method; see the Allow header."
    ),
    "IDEMPOTENCY_KEY_REUSED": ProblemType(
        422,  # draft-ietf-httpapi-idempotency-key-header; a 409 would make a generic retrying client loop
        "Idempotency-Key reused",
        "This Idempotency-Key was already used with a different payload. Use a new key for a new run.",
    ),
    "RUN_TERMINAL": ProblemType(409, "Run already ended", "The run is in a terminal state; it cannot change."),
    "RESULT_NOT_READY": ProblemType(
        409, "Result not ready", "The run has no result (yet): poll the run until it is COMPLETED."
    ),
    "PRECONDITION_FAILED": ProblemType(
        412,
        "Precondition failed",
        "The If-Match header names no current ETag of the resource: read it again for its ETag.",
    ),
    "RESULT_EXPIRED": ProblemType(410, "Result expired", "The result is past its retention period."),
    "PAYLOAD_TOO_LARGE": ProblemType(413, "Payload too large", "The request body is over 256 KiB."),
    "UNSUPPORTED_MEDIA_TYPE": ProblemType(
        415, "Unsupported media type", "Send the body as `Content-Type: application/json`."
    ),
    "VALIDATION_ERROR": ProblemType(422, "Validation error", "Some fields are invalid; see `errors`."),
    "INVALID_MONEY": ProblemType(
        422,
        "Invalid money amount",
        'Money is a JSON string like "0.0500": digits, at most 4 decimals, more than 0 and at most 10000.',
    ),
    "INVALID_MONEY_SCALE": ProblemType(422, "Too many decimals", "Money amounts have at most 4 decimals (0.0001 USD)."),
    "UNKNOWN_PACK_TYPE": ProblemType(422, "Unknown pack type", "See GET /v1/packs for the packs there are."),
    "WEBHOOK_URL_BLOCKED": ProblemType(
        422,
        "Webhook URL blocked",
        "A webhook URL must be https and every address its host resolves to public: no private, loopback, "
        "link-local, metadata or other reserved address.",
    ),
    "INVALID_INPUTS": ProblemType(
        422, "Invalid inputs", "The inputs do not match the pack's JSON Schema; see `errors`."
    ),
    "MAX_COST_OVER_PLAN_LIMIT": ProblemType(
        422, "Max cost over plan limit", "max_cost_usd is above what your plan allows per run for this pack."
    ),
    "MAX_COST_OVER_KEY_LIMIT": ProblemType(
        422,
        "Max cost over key limit",
        "max_cost_usd is above what your API key (or a key above it) allows per run (max_cost_per_run_usd).",
    ),
    "KEY_LIMIT_OVER_PARENT": ProblemType(
        422, "Key limit over parent", "A key's limits may not exceed those of the keys above it; see `errors`."
    ),
    "MAX_COST_TOO_LOW": ProblemType(
        422, "Max cost too low", "max_cost_usd is below the least this run can cost (see GET /v1/packs)."
    ),
    "RATE_LIMITED": ProblemType(429, "Rate limited", "Too many requests; retry after `Retry-After` seconds."),
    "CONCURRENCY_LIMITED": ProblemType(
        429, "Too many open runs", "Your plan's limit of concurrent runs is reached; retry when one ends."
    ),
    "INTERNAL_ERROR": ProblemType(500, "Internal error", "Something failed on our side; it was logged."),
    "UNAVAILABLE": ProblemType(503, "Service unavailable", "A dependency is down; retry after `Retry-After`."),
}

REASON_BY_STATUS: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "RUN_TERMINAL",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}


class DependencyUnavailableError(Exception):
    """A dependency (the result storage, …) cannot answer now, which says nothing about the data it holds: the
    caller must not read it as "absent". The API answers 503 UNAVAILABLE with Retry-After."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"the {dependency} is unavailable")
        self.dependency = dependency


class ApplicationError(Exception):
    """An error an API client can act on. `extra` adds members to the problem (e.g. `available_usd`)."""

    def __init__(
        self,
        reason_code: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        problem = PROBLEMS[reason_code]
        self.reason_code = reason_code
        self.status = problem.status
        self.title = problem.title
        self.detail = detail or problem.description
        self.errors = errors
        self.extra = extra or {}
        self.headers = headers or {}
        super().__init__(f"{reason_code}: {self.detail}")
