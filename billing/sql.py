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


# --- What the database keeps itself (SPEC §2.1), installed by billing's migrations ----------------------------------

# Why: only the database holds every writer to it — at commit, each ledger transaction touched has at least two
# entries summing to exactly zero (a deferred constraint trigger, as django-hordak's `check_leg`), and the ledger is
# append-only.
_LEDGER_TRIGGERS_PG = """
CREATE FUNCTION billing_check_balanced() RETURNS trigger AS $$
DECLARE
    txn_id bigint;
    total numeric;
    legs integer;
BEGIN
    IF TG_TABLE_NAME = 'billing_ledgerentry' THEN
        txn_id := NEW.transaction_id;
    ELSE
        txn_id := NEW.id;
    END IF;
    SELECT COALESCE(SUM(amount_micros), 0), COUNT(*) INTO total, legs
      FROM billing_ledgerentry WHERE transaction_id = txn_id;
    IF total <> 0 OR legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: % entries summing to % micros', txn_id, legs, total
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER billing_entry_balanced
    AFTER INSERT ON billing_ledgerentry DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_check_balanced();
CREATE CONSTRAINT TRIGGER billing_transaction_balanced
    AFTER INSERT ON billing_ledgertransaction DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_check_balanced();

CREATE FUNCTION billing_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_entry_append_only BEFORE UPDATE OR DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_append_only();
CREATE TRIGGER billing_transaction_append_only BEFORE UPDATE OR DELETE ON billing_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION billing_append_only();
"""
_LEDGER_TRIGGERS_PG_DROP = """
DROP TRIGGER IF EXISTS billing_entry_balanced ON billing_ledgerentry;
DROP TRIGGER IF EXISTS billing_transaction_balanced ON billing_ledgertransaction;
DROP TRIGGER IF EXISTS billing_entry_append_only ON billing_ledgerentry;
DROP TRIGGER IF EXISTS billing_transaction_append_only ON billing_ledgertransaction;
DROP FUNCTION IF EXISTS billing_check_balanced();
DROP FUNCTION IF EXISTS billing_append_only();
"""
_LEDGER_TABLES = {"billing_entry": "billing_ledgerentry", "billing_transaction": "billing_ledgertransaction"}
# SQLite (the embedded mode) has no deferred triggers: the append-only rule only.
_LEDGER_TRIGGERS_SQLITE = {
    trigger: f"""CREATE TRIGGER IF NOT EXISTS {trigger} BEFORE {op} ON {table}
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;"""
    for name, table in _LEDGER_TABLES.items()
    for op in ("UPDATE", "DELETE")
    for trigger in (f"{name}_append_only_{op.lower()}",)
}
LEDGER_TRIGGERS = {
    "postgresql": frozenset(f"{name}_{rule}" for name in _LEDGER_TABLES for rule in ("balanced", "append_only")),
    "sqlite": frozenset(_LEDGER_TRIGGERS_SQLITE),
}
_TRIGGER_LIST = {
    "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    " AND tgrelid IN ('billing_ledgerentry'::regclass, 'billing_ledgertransaction'::regclass)",
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name LIKE 'billing_ledger%'",
}


def ledger_triggers(using: Any = connection) -> set[str]:
    """The names of the ledger's triggers present in the database of `using` (a connection)."""
    with using.cursor() as cursor:
        cursor.execute(_TRIGGER_LIST[using.vendor])
        return {name for (name,) in cursor.fetchall()}


def ledger_triggers_ensure(schema_editor: Any) -> None:
    """Install the ledger's triggers where any is missing, leaving those present (idempotent).

    Why a check and not a plain CREATE: SQLite drops a table's triggers when a migration rebuilds the table, so a
    migration that alters a ledger table on SQLite must end by calling this again.
    """
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        for statement in _LEDGER_TRIGGERS_SQLITE.values():
            schema_editor.execute(statement)
    elif vendor == "postgresql" and LEDGER_TRIGGERS[vendor] - ledger_triggers(schema_editor.connection):
        schema_editor.execute(_LEDGER_TRIGGERS_PG_DROP, params=None)
        schema_editor.execute(_LEDGER_TRIGGERS_PG, params=None)


def ledger_triggers_drop(schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(_LEDGER_TRIGGERS_PG_DROP, params=None)
    elif vendor == "sqlite":
        for name in _LEDGER_TRIGGERS_SQLITE:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def checkpoint_fillfactor(schema_editor: Any, *, percent: int) -> None:
    """Set the fill factor of the incremental audit's per-account checkpoint (PostgreSQL only).

    Why: half of each page left free lets the hourly UPDATE of the touched accounts' rows be HOT (no index written).
    """
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE billing_accountcheckpoint SET (fillfactor = {int(percent)})")
