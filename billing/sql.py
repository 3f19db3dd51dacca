"""Every hand-written SQL statement of billing, each with the one reason it is not the ORM's (the figures they buy:
docs/BENCHMARKS.md). The ledger audit's checks are SQL by design and stay in billing/audit.py.

The hot ones run on the hot cursor (config.adapters.django_hot): prepared on PostgreSQL, so every parameter whose
type matters is cast in the statement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import connection

from config.adapters.django_hot import hot_cursor

if TYPE_CHECKING:
    from billing.models import LedgerTransaction

# Why: the tenant's open plan read by the API-key lookup's own query (dpp.http.auth), instead of a query of its own.
OPEN_PLAN_ID_SQL = "(SELECT p.plan_id FROM billing_tenantplan p WHERE p.tenant_id = k.tenant_id AND p.ended_at IS NULL)"


def balances_move(
    *,
    moves: list[tuple[str, int]],
    held_id: str,
    open_delta: int,
    max_open: int | None,
    platform: tuple[str, int] | None = None,
) -> int:
    """Move the tenant's balances by `moves` (account id, delta), and a platform shard's by `platform`, in one
    conditional UPDATE; the rows it changed (fewer than the moves: a guard refused — no tenant balance goes negative,
    the held row's open reservations stay under `max_open`; the platform row has no guard). `open_delta` moves the
    held row's count of open reservations.

    Why: the hottest statement of the platform (the ORM's expressions cost more CPU than the rest of a submit's
    queries; the shard in the same statement saves a settle a round trip). Rows are locked in key order first (a
    subquery FOR UPDATE): an UPDATE alone locks in scan order, which can differ between two statements and
    deadlock them. SQLite has no row locks (it serialises writers), hence no FOR UPDATE there.
    """
    rows = [*moves, *([platform] if platform and platform[1] else [])]
    whens = " ".join("WHEN %s THEN CAST(%s AS bigint)" for _ in rows)
    guards = " OR ".join(_guard(pk == held_id and max_open is not None) for pk, _ in moves)
    if len(rows) > len(moves):
        guards += " OR id = %s"
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    in_list = ", ".join("%s" for _ in rows)
    statement = (
        f"UPDATE billing_account SET balance_micros = balance_micros + CASE id {whens} END, "  # noqa: S608 - constants
        "open_reservations = open_reservations + CASE id WHEN %s THEN CAST(%s AS integer) ELSE 0 END "
        f"WHERE id IN (SELECT id FROM billing_account WHERE id IN ({in_list}) ORDER BY id{lock}) AND ({guards})"
    )
    params: list[str | int] = [value for pk, delta in rows for value in (pk, delta)]
    params += [held_id, open_delta, *(pk for pk, _ in rows)]
    for pk, delta in moves:
        params += [pk, -delta]
        if pk == held_id and max_open is not None:
            params.append(max_open)
    params += [pk for pk, _ in rows[len(moves) :]]
    return _rowcount(statement, params)


def _rowcount(statement: str, params: list[Any]) -> int:
    """Execute `statement` on the hot cursor; the rows it changed."""
    with hot_cursor() as cursor:
        cursor.execute(statement, params)
        changed: int = cursor.rowcount
    return changed


def _guard(with_max_open: bool) -> str:
    """A tenant row's guard: its balance stays ≥ 0 (and the held row's open reservations under the maximum)."""
    if with_max_open:
        return "(id = %s AND balance_micros >= CAST(%s AS bigint) AND open_reservations < CAST(%s AS bigint))"
    return "(id = %s AND balance_micros >= CAST(%s AS bigint))"


def transaction_insert_with_entries(*, txn: LedgerTransaction, entries: list[tuple[str, int]]) -> int:
    """INSERT the ledger transaction and its entries (account id, amount) in one statement; the transaction's id.

    Why: every run posts two transactions, and the ORM's two INSERTs cost a round trip and more CPU than the
    database spends on them. PostgreSQL only (a data-modifying WITH).
    """
    values = ", ".join("(%s, %s::bigint)" for _ in entries)  # placeholders only: every value is a parameter
    statement = (
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
        cursor.execute(statement, params)
        transaction_id: int = cursor.fetchone()[0]
    return transaction_id


# The tenant's available balance as this transaction sees it (after its own UPDATE of it, under that row's lock).
_AVAILABLE = "(SELECT a.balance_micros FROM billing_account a WHERE a.id = %s)"
_LOW_BALANCE_FELL = (
    "UPDATE dpp_tenant SET low_balance_notified = TRUE WHERE id = %s AND low_balance_threshold_micros > 0"  # noqa: S608
    f" AND low_balance_notified = FALSE AND low_balance_threshold_micros > {_AVAILABLE}"
)
_LOW_BALANCE_ROSE = (
    "UPDATE dpp_tenant SET low_balance_notified = FALSE WHERE id = %s AND low_balance_threshold_micros > 0"  # noqa: S608
    f" AND low_balance_notified = TRUE AND low_balance_threshold_micros <= {_AVAILABLE}"
)


def low_balance_flag(*, tenant_id: str, available_id: str, fell: bool) -> bool:
    """Compare-and-set the tenant's balance.low memory against its available balance: after a fall, set it if the
    balance is now below a threshold and it was clear; after a rise, clear it if the balance is back at or above.
    True if it changed.

    Why: it runs in every reservation's transaction; the ORM's filtered UPDATE with a subquery cost a submit about
    as much CPU as its reservation (docs/BENCHMARKS.md, "Submit").
    """
    return _rowcount(_LOW_BALANCE_FELL if fell else _LOW_BALANCE_ROSE, [tenant_id, available_id]) > 0


def advisory_xact_lock(key: int) -> None:
    """Take PostgreSQL's transaction-level advisory lock `key` (waits for it; released at commit or rollback).

    Why: serialises the manual posts of one admin form's one-time code; the ORM has no advisory locks.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
