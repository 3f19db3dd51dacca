"""balance.low (SPEC §10): once per crossing of the tenant's threshold, in the transaction that crossed it.

Called after a move of the tenant's available balance, inside its transaction (the balance UPDATE already holds
the account's row lock, so the balance read here is the one this transaction commits). The crossing's memory is
`Tenant.low_balance_notified`, set by the CAS that records the event: a fall below the threshold fires when it is
clear, money coming in (a top-up, a credit) clears it once available is back at or above the threshold. A
settle's release is the tenant's own reservation coming back, not money coming in: it does not re-arm, or a
tenant hovering at its threshold would be told at every run.
"""

from __future__ import annotations

from billing import sql
from billing.models import Account
from billing.presenters import account_object
from billing.selectors import plan_get
from dpp.webhooks.outbox import webhook_event_record


def low_balance_watch(*, tenant_id: str, rose: bool) -> None:
    """After available fell (`rose` False): record balance.low if it is now below the threshold for the first
    time since it was last at or above; after it rose: re-arm once it is at or above."""
    available_id = Account.tenant_account_id(tenant_id, Account.Kind.AVAILABLE)
    crossed = sql.low_balance_flag(tenant_id=tenant_id, available_id=available_id, fell=not rose)
    if crossed and not rose:
        webhook_event_record(
            tenant_id=tenant_id,
            event_type="balance.low",
            data=lambda: account_object(tenant_id=tenant_id, plan_code=plan_get(tenant_id=tenant_id).code),
        )
