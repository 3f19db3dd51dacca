"""Tenants as the tests meet them: on a plan, with credit and an API client authenticated as them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from rest_framework.test import APIClient

from billing.models import Plan
from billing.services import ledger_topup, plan_assign, tenant_onboard
from dpp.models import Tenant
from dpp.money import MICROS_PER_USD as USD
from dpp.services import api_key_issue


@dataclass
class Persona:
    tenant: Tenant
    api_key: str
    client: APIClient


@dataclass
class Personas:
    owner: Persona  # the tenant whose resources a test looks at
    other: Persona  # a second paying tenant: must never see the owner's resources
    outsider: Persona  # a tenant with no money and no runs


def unique_tenant_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_persona(*, plan: str = "starter", credit_micros: int = 10 * USD, prefix: str = "t") -> Persona:
    """A tenant on `plan` with `credit_micros` available and an API client authenticated as it."""
    tenant = tenant_onboard(tenant_id=unique_tenant_id(prefix), plan_code=plan, actor="test")
    if credit_micros:
        ledger_topup(tenant=tenant, amount_micros=credit_micros, actor="test", reason="test credit")
    issued = api_key_issue(tenant=tenant, label="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    return Persona(tenant=tenant, api_key=issued.secret, client=client)


def make_plan(code: str, **overrides: Any) -> Plan:
    """A plan like starter, every pack allowed, with `overrides` (e.g. submits_per_min=3)."""
    fields: dict[str, Any] = {
        "name": code,
        "pack_max_cost_micros": {"decision": USD, "url": USD, "diagnostic": USD},
        "submits_per_min": 60,
        "reads_per_min": 300,
        "max_concurrent_runs": 10,
        **overrides,
    }
    return Plan.objects.create(code=code, **fields)


def persona_on_plan(plan: Plan, *, credit_micros: int = 10 * USD) -> Persona:
    persona = make_persona(plan="starter", credit_micros=credit_micros)
    plan_assign(tenant=persona.tenant, plan_code=plan.code, actor="test", reason="test plan")
    return persona
