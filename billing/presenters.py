"""How money reads look on the wire, for the API and for the webhooks that carry them (SPEC §4, §10)."""

from __future__ import annotations

from typing import Any

from billing.selectors import balances_get
from dpp.money import format_usd


def account_object(*, tenant_id: str, plan_code: str) -> dict[str, Any]:
    """GET /v1/account's object: the plan and the two balances as 4-decimal strings."""
    balances = balances_get(tenant_id=tenant_id)
    return {
        "tenant_id": tenant_id,
        "plan": plan_code,
        "available_usd": format_usd(balances.available_micros),
        "held_usd": format_usd(balances.held_micros),
        "currency": "USD",
    }
