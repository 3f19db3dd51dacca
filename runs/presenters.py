"""How runs look on the wire (SPEC §4): receipts, run bodies and the cost headers. Money as 4-decimal strings."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from django.urls import reverse
from django.utils import timezone
from rest_framework.request import Request

from dpp.money import format_usd
from runs import results
from runs.models import Run, RunStatus

RECOMMENDED_POLL_INTERVAL_MS = 1500


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


_RUN_ID_SLOT = str(uuid.UUID(int=0))


@functools.cache
def _run_path_template() -> str:
    return reverse("run-detail", args=[_RUN_ID_SLOT])


def _run_path(run_id: uuid.UUID) -> str:
    """`reverse("run-detail", args=[run_id])`, reversed once per process: every receipt carries it."""
    return _run_path_template().replace(_RUN_ID_SLOT, str(run_id))


def receipt(run: Run) -> dict[str, Any]:
    """The answer to an accepted submit, identical on every replay."""
    return {
        "run_id": str(run.pk),
        "status": RunStatus.QUEUED,
        "poll": {
            "href": _run_path(run.pk),
            "recommended_interval_ms": RECOMMENDED_POLL_INTERVAL_MS,
            "max_wait_sec": run.timebox_sec,
        },
        "reservation": {
            "max_cost_usd": format_usd(run.reserved_micros),
            "minimum_fee_usd": format_usd(run.minimum_fee_micros),
            "currency": "USD",
        },
        "meta": {"created_at": _iso(run.created_at), "trace_id": run.trace_id, "profile_version": run.profile_version},
    }


def cost_headers(run: Run) -> dict[str, str]:
    headers = {
        "X-DPP-Cost-Reserved": format_usd(run.reserved_micros),
        "X-DPP-Cost-Minimum-Fee": format_usd(run.minimum_fee_micros),
    }
    if run.charged_micros is not None:
        headers["X-DPP-Cost-Actual"] = format_usd(run.charged_micros)
    return headers


def _result(run: Run, request: Request | None) -> dict[str, Any] | None:
    if run.status != RunStatus.COMPLETED or not run.result_key:
        return None
    expires_at = results.result_expires_at(run)
    expired = expires_at is not None and expires_at <= timezone.now()
    if expired:
        url = None
    elif request is None:  # a webhook's copy: the API path, never a signed link that would outlive its event
        url = reverse("run-result", args=[run.pk])
    elif results.is_local_storage():
        url = request.build_absolute_uri(reverse("run-result", args=[run.pk]))
    else:
        url = results.signed_url(run.result_key)
    return {"url": url, "sha256": run.result_sha256, "bytes": run.result_bytes, "expires_at": _iso(expires_at)}


def run_body(run: Run, *, available_micros: int, request: Request | None) -> dict[str, Any]:
    """GET /v1/runs/{id}'s object; without a request (a webhook's data) `result.url` is the API path."""
    error = None
    if run.status in (RunStatus.FAILED, RunStatus.CANCELED, RunStatus.EXPIRED):
        error = {"reason_code": run.reason_code, "detail": run.error_detail}
    return {
        "run_id": str(run.pk),
        "pack_type": run.pack_type,
        "status": run.status,
        "money_state": run.money_state,
        "cost": {
            "reserved_usd": format_usd(run.reserved_micros),
            "used_usd": format_usd(run.charged_micros) if run.charged_micros is not None else None,
            "minimum_fee_usd": format_usd(run.minimum_fee_micros),
            "budget_remaining_usd": format_usd(available_micros),
        },
        "result": _result(run, request),
        "error": error,
        "meta": {
            "created_at": _iso(run.created_at),
            "updated_at": _iso(run.updated_at),
            "completed_at": _iso(run.completed_at),
            "cancel_requested_at": _iso(run.cancel_requested_at),
            "trace_id": run.trace_id,
            "profile_version": run.profile_version,
        },
    }


def quote_body(quote: Any) -> dict[str, Any]:
    """A quote as POST /v1/quotes and the MCP tool quote_run show it (SPEC §9)."""
    remaining = quote.key_spend_remaining_micros
    return {
        "pack_type": quote.pack_type,
        "price_floor_usd": format_usd(quote.price_floor_micros),
        "price_ceiling_usd": format_usd(quote.price_ceiling_micros),
        "price_exact": quote.price_exact,
        "suggested_max_cost_usd": format_usd(quote.suggested_max_cost_micros),
        "minimum_fee_usd": format_usd(quote.minimum_fee_micros),
        "available_usd": format_usd(quote.available_micros),
        "key_spend_remaining_usd": None if remaining is None else format_usd(remaining),
        "accepted": True,  # a quote that would be refused is that refusal's problem instead
    }
