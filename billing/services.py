"""Every write of money. Each movement is a balanced transaction posted together with the conditional UPDATE
of the balances it moves, inside the caller's database transaction.

Lock order, to keep PostgreSQL free of deadlocks: a tenant's two account rows first (one UPDATE, rows in key
order), platform rows last and as late as possible. A platform row is one of its kind's 16 shards (SPEC §12), picked
by the run id or the tenant, so it is shared by a sixteenth of the movements instead of all: still hold it briefly.
`ledger_reserve` and `ledger_settle` run inside a run service's transaction (the run's state change and its
money commit together); `ledger_topup`, `ledger_adjust` and `tenant_onboard` are top-level and durable.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from billing.models import Account, LedgerEntry, LedgerTransaction, Plan, TenantPlan
from dpp.db.hot import hot_cursor
from dpp.http.errors import ApplicationError
from dpp.models import Tenant
from dpp.money import GRANULE_MICROS, format_usd
from dpp.services import tenant_create

Kind = LedgerTransaction.Kind
AccountKind = Account.Kind


class LedgerInvariantError(RuntimeError):
    """A movement would break an invariant that cannot be the client's fault (e.g. held going negative)."""


class ReservationRacedError(RuntimeError):
    """A reservation refused on rows a concurrent commit has since changed: neither refusal holds any more.

    The balance UPDATE judges the tenant's rows as they were when the statement began; if a top-up or a settle
    commits while the statement waits for their lock, the guard may still refuse on the old balance (PostgreSQL
    re-checks the new row version only for rows the old one let through). The caller rolls back and tries again.
    """


def _require_transaction() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("money must move inside the database transaction of its state change")


def _check_amount(micros: int, *, allow_zero: bool = False) -> None:
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise TypeError("money is int micros")
    if micros % GRANULE_MICROS or micros < 0 or (micros == 0 and not allow_zero):
        raise ValueError(f"{micros} is not a positive multiple of {GRANULE_MICROS} micros")


def _move_tenant_balances(
    tenant_id: str, deltas: Mapping[str, int], *, open_delta: int = 0, max_open: int | None = None
) -> bool:
    """One conditional UPDATE of the tenant's account rows; False (roll back!) if a guard refused it.

    Guards: no balance goes negative; with `max_open`, the held account has fewer open reservations than that.
    `open_delta` moves the held account's count of open reservations (+1 reserve, -1 settle).
    """
    moves = [(Account.tenant_account_id(tenant_id, kind), delta) for kind, delta in deltas.items() if delta]
    if not moves:
        return True
    held_id = Account.tenant_account_id(tenant_id, AccountKind.HELD)
    sql, params = _balances_update(moves, held_id, open_delta, max_open)
    with hot_cursor() as cursor:
        cursor.execute(sql, params)
        changed: int = cursor.rowcount
    return changed == len(moves)


def _balances_update(
    moves: list[tuple[str, int]], held_id: str, open_delta: int, max_open: int | None
) -> tuple[str, list[str | int]]:
    """The UPDATE of `_move_tenant_balances`, written out: it is the hottest statement of the platform, and
    building it through the ORM's expressions cost more CPU than the rest of a submit's queries together.

    The rows are locked in key order first (a subquery FOR UPDATE): an UPDATE alone locks them in scan order,
    which can differ between two statements and deadlock two accepts of one tenant. SQLite has no row locks
    (it serialises writers), hence no FOR UPDATE there. Run on the hot cursor (prepared on PostgreSQL): every
    parameter whose type matters is cast.
    """
    whens = " ".join("WHEN %s THEN CAST(%s AS bigint)" for _ in moves)
    guards = " OR ".join(
        "(id = %s AND balance_micros >= CAST(%s AS bigint)"
        + (" AND open_reservations < CAST(%s AS bigint))" if pk == held_id and max_open is not None else ")")
        for pk, _ in moves
    )
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    in_list = ", ".join("%s" for _ in moves)
    sql = (
        f"UPDATE billing_account SET balance_micros = balance_micros + CASE id {whens} END, "  # noqa: S608 - constants
        "open_reservations = open_reservations + CASE id WHEN %s THEN CAST(%s AS integer) ELSE 0 END "
        f"WHERE id IN (SELECT id FROM billing_account WHERE id IN ({in_list}) ORDER BY id{lock}) AND ({guards})"
    )
    params: list[str | int] = [value for pk, delta in moves for value in (pk, delta)]
    params += [held_id, open_delta, *(pk for pk, _ in moves)]
    for pk, delta in moves:
        params += [pk, -delta]
        if pk == held_id and max_open is not None:
            params.append(max_open)
    return sql, params


def _refused(error: Exception) -> Exception:
    """After a refused movement some rows may have moved: mark the transaction (or the caller's savepoint) for
    rollback, so it cannot commit even if a caller catches the error that follows."""
    transaction.set_rollback(True)
    return error


def _move_platform_balance(account_id: str, delta: int) -> None:
    """Move a platform shard's balance (last in the transaction: see the lock order above)."""
    if delta:
        Account.objects.filter(pk=account_id).update(balance_micros=F("balance_micros") + delta)


def _post(
    *,
    kind: str,
    tenant_id: str,
    legs: Mapping[str, int],
    run_id: uuid.UUID | None = None,
    actor: str = "",
    reason: str = "",
    trace_id: str = "",
) -> LedgerTransaction:
    """Write the transaction and its entries (the caller moves the balances in the same database transaction)."""
    if sum(legs.values()) != 0:
        raise LedgerInvariantError(f"unbalanced {kind}: {dict(legs)}")
    txn = LedgerTransaction(
        kind=kind,
        tenant_id=tenant_id,
        run_id=run_id,
        actor=actor,
        reason=reason,
        trace_id=trace_id,
        created_at=timezone.now(),
    )
    entries = [(account_id, amount) for account_id, amount in legs.items() if amount]
    if connection.vendor == "postgresql":
        txn.pk = _insert_transaction_and_entries(txn, entries)
    else:
        txn.save(force_insert=True)
        LedgerEntry.objects.bulk_create(LedgerEntry(transaction=txn, account_id=a, amount_micros=m) for a, m in entries)
    return txn


def _insert_transaction_and_entries(txn: LedgerTransaction, entries: list[tuple[str, int]]) -> int:
    """One statement for the transaction and its entries (PostgreSQL): every run posts two of them, and the ORM's
    two INSERTs cost a round trip and more CPU than the database spends on them."""
    values = ", ".join("(%s, %s::bigint)" for _ in entries)  # placeholders only: every value is a parameter
    sql = (
        "WITH t AS (INSERT INTO billing_ledgertransaction"  # noqa: S608
        " (kind, tenant_id, run_id, actor, reason, trace_id, created_at)"
        " VALUES (%s, %s, %s::uuid, %s, %s, %s, %s::timestamptz) RETURNING id)"
        " INSERT INTO billing_ledgerentry (transaction_id, account_id, amount_micros)"
        f" SELECT t.id, v.account_id, v.amount FROM t, (VALUES {values}) AS v (account_id, amount)"
        " RETURNING transaction_id"
    )
    params: list[Any] = [txn.kind, txn.tenant_id, txn.run_id, txn.actor, txn.reason, txn.trace_id, txn.created_at]
    params += [value for entry in entries for value in entry]
    with hot_cursor() as cursor:
        cursor.execute(sql, params)
        transaction_id: int = cursor.fetchone()[0]
    return transaction_id


def _available_micros(tenant_id: str) -> int:
    return (
        Account.objects.filter(pk=Account.tenant_account_id(tenant_id, AccountKind.AVAILABLE))
        .values_list("balance_micros", flat=True)
        .get()
    )


def ledger_reserve(
    *, tenant_id: str, run_id: uuid.UUID, amount_micros: int, trace_id: str, max_open: int | None = None
) -> LedgerTransaction:
    """available → held, or 402 INSUFFICIENT_FUNDS, or (with `max_open`) 429 CONCURRENCY_LIMITED when the tenant
    already has that many open reservations, or ReservationRacedError when neither holds any more (the caller
    rolls back and tries again). Locks the tenant's accounts until the caller commits."""
    _require_transaction()
    _check_amount(amount_micros)
    # The entries first, the balances last: the UPDATE takes the tenant's row locks, held until the commit that
    # follows it at once (the same invariants hold at commit either way; a refusal rolls all of it back).
    txn = _post(
        kind=Kind.RESERVE,
        tenant_id=tenant_id,
        run_id=run_id,
        trace_id=trace_id,
        legs={
            Account.tenant_account_id(tenant_id, AccountKind.AVAILABLE): -amount_micros,
            Account.tenant_account_id(tenant_id, AccountKind.HELD): amount_micros,
        },
    )
    deltas: dict[str, int] = {AccountKind.AVAILABLE: -amount_micros, AccountKind.HELD: amount_micros}
    if not _move_tenant_balances(tenant_id, deltas, open_delta=1, max_open=max_open):
        raise _refused(_reserve_refusal(tenant_id, amount_micros, max_open))
    return txn


def _reserve_refusal(tenant_id: str, amount_micros: int, max_open: int | None) -> Exception:
    """Why the reservation was refused, read from the rows as they are now (the refused UPDATE holds their locks)."""
    available = _available_micros(tenant_id)
    if available < amount_micros:
        return ApplicationError(
            "INSUFFICIENT_FUNDS",
            f"This run needs {format_usd(amount_micros)} USD held; {format_usd(available)} USD is available.",
            extra={"available_usd": format_usd(available), "required_usd": format_usd(amount_micros)},
        )
    held = Account.objects.filter(pk=Account.tenant_account_id(tenant_id, AccountKind.HELD))
    if max_open is not None and held.values_list("open_reservations", flat=True).get() >= max_open:
        return ApplicationError(
            "CONCURRENCY_LIMITED",
            f"Your plan allows {max_open} runs at once; wait for one to end.",
            headers={"Retry-After": "2"},
        )
    return ReservationRacedError(f"tenant {tenant_id}: the balances changed while the reservation waited for them")


def ledger_settle(
    *,
    tenant_id: str,
    run_id: uuid.UUID,
    reserved_micros: int,
    charge_micros: int,
    trace_id: str,
    reason: str = "",
) -> LedgerTransaction:
    """held → revenue (the charge) and held → available (the rest). At most once per run (unique constraint)."""
    _require_transaction()
    _check_amount(reserved_micros)
    _check_amount(charge_micros, allow_zero=True)
    if charge_micros > reserved_micros:
        raise LedgerInvariantError(f"charge {charge_micros} exceeds reservation {reserved_micros}")
    released = reserved_micros - charge_micros
    revenue = Account.platform_account_for(AccountKind.REVENUE, run_id)
    txn = _post(
        kind=Kind.SETTLE,
        tenant_id=tenant_id,
        run_id=run_id,
        trace_id=trace_id,
        reason=reason,
        legs={
            Account.tenant_account_id(tenant_id, AccountKind.HELD): -reserved_micros,
            Account.tenant_account_id(tenant_id, AccountKind.AVAILABLE): released,
            revenue: charge_micros,
        },
    )
    # As in ledger_reserve: the balances last, so that their row locks are held as briefly as possible.
    deltas: dict[str, int] = {AccountKind.AVAILABLE: released, AccountKind.HELD: -reserved_micros}
    if not _move_tenant_balances(tenant_id, deltas, open_delta=-1):
        raise _refused(LedgerInvariantError(f"held balance of {tenant_id} is below the reservation of run {run_id}"))
    _move_platform_balance(revenue, charge_micros)
    return txn


def _require_actor_and_reason(actor: str, reason: str) -> None:
    if not actor.strip() or not reason.strip():
        raise ApplicationError("VALIDATION_ERROR", "A manual change (money or plan) needs an actor and a reason.")


@transaction.atomic(durable=True)
def ledger_topup(
    *, tenant: Tenant, amount_micros: int, actor: str, reason: str, trace_id: str = ""
) -> LedgerTransaction:
    """funding → available: credit bought or granted."""
    _require_actor_and_reason(actor, reason)
    _check_amount(amount_micros)
    if not _move_tenant_balances(tenant.pk, {AccountKind.AVAILABLE: amount_micros}):
        raise _refused(LedgerInvariantError(f"tenant {tenant.pk} has no accounts"))
    funding = Account.platform_account_for(AccountKind.FUNDING, tenant.pk)
    txn = _post(
        kind=Kind.TOPUP,
        tenant_id=tenant.pk,
        actor=actor,
        reason=reason,
        trace_id=trace_id,
        legs={
            funding: -amount_micros,
            Account.tenant_account_id(tenant.pk, AccountKind.AVAILABLE): amount_micros,
        },
    )
    _move_platform_balance(funding, -amount_micros)
    return txn


@transaction.atomic(durable=True)
def ledger_adjust(
    *, tenant: Tenant, amount_micros: int, counterparty: str, actor: str, reason: str, trace_id: str = ""
) -> LedgerTransaction:
    """A manual correction between the tenant's available balance and revenue or funding.

    `amount_micros` > 0 credits the tenant (e.g. a refund from revenue); < 0 debits it (never below zero).
    """
    _require_actor_and_reason(actor, reason)
    if counterparty not in (AccountKind.REVENUE, AccountKind.FUNDING):
        raise ValueError("an adjustment's counterparty is REVENUE or FUNDING")
    _check_amount(abs(amount_micros))
    if not _move_tenant_balances(tenant.pk, {AccountKind.AVAILABLE: amount_micros}):
        available = format_usd(_available_micros(tenant.pk))
        raise _refused(
            ApplicationError(
                "INSUFFICIENT_FUNDS",
                f"The adjustment would take {tenant.pk}'s available balance below zero.",
                extra={"available_usd": available, "required_usd": format_usd(-amount_micros)},
            )
        )
    platform = Account.platform_account_for(counterparty, tenant.pk)
    txn = _post(
        kind=Kind.ADJUSTMENT,
        tenant_id=tenant.pk,
        actor=actor,
        reason=reason,
        trace_id=trace_id,
        legs={
            platform: -amount_micros,
            Account.tenant_account_id(tenant.pk, AccountKind.AVAILABLE): amount_micros,
        },
    )
    _move_platform_balance(platform, -amount_micros)
    return txn


def _plan_assign(*, tenant: Tenant, plan_code: str, actor: str, reason: str) -> TenantPlan:
    try:
        plan = Plan.objects.get(code=plan_code)
    except Plan.DoesNotExist:
        raise ApplicationError("VALIDATION_ERROR", f"There is no plan {plan_code!r}.") from None
    TenantPlan.objects.filter(tenant=tenant, ended_at__isnull=True).update(ended_at=timezone.now())
    return TenantPlan.objects.create(tenant=tenant, plan=plan, actor=actor, reason=reason)


@transaction.atomic(durable=True)
def plan_assign(*, tenant: Tenant, plan_code: str, actor: str, reason: str) -> TenantPlan:
    """Switch the tenant to another plan; the previous one is closed, kept in the history.

    Two switches of one tenant at once take turns on the tenant's row lock: without it, both would close the same
    open plan and the second INSERT would break `billing_one_open_plan_per_tenant`."""
    _require_actor_and_reason(actor, reason)
    list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk", flat=True))
    return _plan_assign(tenant=tenant, plan_code=plan_code, actor=actor, reason=reason)


@transaction.atomic(durable=True)
def tenant_onboard(*, tenant_id: str, name: str = "", plan_code: str = "starter", actor: str) -> Tenant:
    """A tenant with its two accounts (zero balances) and its plan, all or nothing."""
    tenant = tenant_create(tenant_id=tenant_id, name=name)
    Account.objects.bulk_create(
        Account(id=Account.tenant_account_id(tenant.pk, kind), tenant=tenant, kind=kind)
        for kind in Account.TENANT_KINDS
    )
    _plan_assign(tenant=tenant, plan_code=plan_code, actor=actor, reason="onboarding")
    return tenant
