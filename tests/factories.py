"""Factories for tests that need runs in a given state without going through HTTP."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from billing.selectors import plan_get
from dpp.money import minimum_fee
from runs.models import Run
from runs.services import run_accept
from runs.submission import request_hash, submission_parse
from tests.conftest import Persona

DIAGNOSTIC_OK = {"sleep_ms": 0, "cost_usd": "0.0300", "outcome": "succeed"}


def submit(
    persona: Persona,
    *,
    pack_type: str = "diagnostic",
    inputs: dict[str, Any] | None = None,
    max_cost_usd: str = "0.0500",
    timebox_sec: int = 90,
    key: str | None = None,
) -> Run:
    """Accept a run through the same service the API uses (money reserved, task published on commit)."""
    body = {
        "pack_type": pack_type,
        "inputs": DIAGNOSTIC_OK if inputs is None else inputs,
        "reservation": {"max_cost_usd": max_cost_usd, "timebox_sec": timebox_sec},
    }
    submission = submission_parse(
        body=body,
        idempotency_key=key or f"key-{uuid.uuid4().hex}",
        request_hash=request_hash(body),
        plan=plan_get(tenant_id=persona.tenant.pk),
        default_trace_id=uuid.uuid4().hex,
    )
    return run_accept(tenant=persona.tenant, plan=plan_get(tenant_id=persona.tenant.pk), submission=submission).run


def queued_run_row(*, tenant_id: str, reserved_micros: int, idempotency_key: str | None = None) -> Run:
    """An unsaved QUEUED run, for tests that write runs through the ORM (bulk or with tampered money)."""
    now = timezone.now()
    return Run(
        tenant_id=tenant_id,
        pack_type="decision",
        profile_version="test",
        idempotency_key=idempotency_key or uuid.uuid4().hex,
        request_hash="0" * 64,
        inputs={},
        timebox_sec=90,
        trace_id=uuid.uuid4().hex,
        reserved_micros=reserved_micros,
        minimum_fee_micros=minimum_fee(reserved_micros),
        created_at=now,
        updated_at=now,
    )
