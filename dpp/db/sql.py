"""Every hand-written SQL statement of dpp, each with the one reason it is not the ORM's (the figures they buy:
docs/BENCHMARKS.md)."""

from __future__ import annotations

from typing import Any

from django.db import connections

from config.adapters.django_hot import hot_cursor


def api_key_with_tenant(
    *, digest: str, chain_columns: str = "", chain_joins: str = "", extra_columns: tuple[tuple[str, str], ...] = ()
) -> tuple[Any, ...] | None:
    """The API key of `digest` and its tenant, in one row: k.id, k.tenant_id, k.prefix, k.key_hash,
    k.last_used_at, k.revoked_at, t.id, t.name, t.status, then `chain_columns` (its ancestors' columns, over the
    aliases `chain_joins` adds), then each of `extra_columns`' SQL expressions (over the aliases k = dpp_apikey and
    t = dpp_tenant). Every piece is built from constants, never input. None if no key has that digest.

    Why: every authenticated request runs it; having the ORM compile it each time cost more CPU than the database
    spent answering it. Prepared (config.adapters.django_hot).
    """
    extra = "".join(f", {expression}" for _, expression in extra_columns)
    statement = (
        "SELECT k.id, k.tenant_id, k.prefix, k.key_hash, k.last_used_at, k.revoked_at, t.id, t.name, t.status"  # noqa: S608
        f"{chain_columns}{extra} FROM dpp_apikey k JOIN dpp_tenant t ON t.id = k.tenant_id {chain_joins}"
        " WHERE k.key_hash = %s"
    )
    with hot_cursor() as cursor:
        cursor.execute(statement, [digest])
        row: tuple[Any, ...] | None = cursor.fetchone()
    return row


def ping(alias: str = "default") -> None:
    """One round trip to the database (raises if it does not answer).

    Why: readiness asks whether the database answers at all, not for any row; the ORM has no such query.
    """
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")


def estimated_rows(*, table: str, alias: str) -> int | None:
    """The planner's row count of `table` (PostgreSQL's pg_class.reltuples), or None if it has none yet.

    Why: an admin changelist's count without a COUNT(*) over a large table; the ORM has no access to the catalog.
    """
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    # -1 (PostgreSQL 14+) means never vacuumed nor analysed: no estimate to trust.
    if row is None or row[0] is None or row[0] < 0:
        return None
    return int(row[0])
