"""Money as the tests read it: the USD unit in micros, the wire format, balances and ledger rows."""

from __future__ import annotations

import re
import uuid

from billing.models import LedgerTransaction
from billing.selectors import balances_get
from dpp.money import MICROS_PER_USD
from tests.helpers.personas import Persona

USD = MICROS_PER_USD
MONEY_RE = re.compile(r"-?\d+\.\d{4}")
LEDGER_ITEM_KEYS = (  # a ledger item's members, in the order the statement's lines and CSV columns repeat them
    "transaction_id",
    "kind",
    "run_id",
    "created_at",
    "reason",
    "available_delta_usd",
    "held_delta_usd",
    "charged_usd",
)


def balances(persona: Persona) -> tuple[int, int]:
    """(available, held) in micros."""
    found = balances_get(tenant_id=persona.tenant.pk)
    return found.available_micros, found.held_micros


def ledger_kinds(run_id: str | uuid.UUID) -> list[str]:
    return sorted(LedgerTransaction.objects.filter(run_id=run_id).values_list("kind", flat=True))
