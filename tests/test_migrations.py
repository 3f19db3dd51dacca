"""The migration chain, run whole in child processes on databases of their own (a temp SQLite file, a new
PostgreSQL database): the models and the migrations agree; the ledger is append-only after a full migrate on both
backends (issue 15, item 1: on SQLite a table rebuild once dropped the triggers, so the trigger lists are compared
with the full expected set); and a database migrated before the squash (docs/decisions.md, "Migrations squashed")
is taken as it is, its staff groups completed.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from billing import sql
from tests.processes import manage, process_env

FORBIDDEN = {  # per ledger table: the statements the issue ran, and a no-op UPDATE (a trigger must refuse it too)
    "billing_ledgerentry": ("UPDATE {table} SET amount_micros = amount_micros + 100",),
    "billing_ledgertransaction": ("UPDATE {table} SET reason = 'rewritten'",),
}
SQLITE_TRIGGER_LIST = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
PG_TRIGGER_LIST = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
# The migrations of before the squash, as a database migrated then records them.
SQUASHED = {
    "dpp": ["0001_initial", "0002_admin_login_failure", "0003_api_key_limits", "0004_webhooks"],
    "billing": [
        "0001_initial",
        "0002_plans_and_platform_accounts",
        "0003_ledger_triggers",
        "0004_ledger_permissions",
        "0005_staff_groups",
        "0006_open_reservations",
        "0007_drop_redundant_indexes",
        "0008_manual_once_per_form",
        "0009_append_only_triggers_again",
        "0010_platform_account_shards",
        "0011_ledger_checkpoint",
        "0012_key_spend",
        "0013_account_checkpoint_fillfactor",
    ],
    "runs": [
        "0001_initial",
        "0002_idempotency_key_index",
        "0003_drop_redundant_indexes",
        "0004_redrive_count",
        "0005_run_api_key",
        "0006_money_sort_indexes",
        "0007_closed_day",
    ],
    "reaper": ["0001_audit_flags", "0002_audit_flag_kinds"],
}


def _with_a_topup(env: dict[str, str]) -> None:
    """A tenant and a posted TOPUP: rows in both ledger tables for the statements to hit."""
    tenant_id = f"trg-{uuid.uuid4().hex[:8]}"
    manage(["create_tenant", tenant_id, "--plan", "starter", "--json"], env)
    manage(["topup", tenant_id, "5.0000", "--reason", "trigger test", "--json"], env)


def _assert_refused(execute: Callable[[str], Any], count_rows: Callable[[str], int], error: type[Exception]) -> None:
    for table, updates in FORBIDDEN.items():
        before = count_rows(table)
        assert before > 0, table
        for statement in (*updates, "UPDATE {table} SET id = id", "DELETE FROM {table}"):
            with pytest.raises(error, match="append-only"):
                execute(statement.format(table=table))
        assert count_rows(table) == before


# --- SQLite (the embedded mode) ---------------------------------------------------------------------------


def _sqlite_env(tmp_path: Path) -> dict[str, str]:
    return process_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'dpp.sqlite3'}",
        DPP_VAR_DIR=str(tmp_path),
        DPP_LOCAL_STORAGE_DIR=str(tmp_path / "results"),
        CELERY_BROKER_URL="filesystem://",
        DPP_BROKER_DIR=str(tmp_path / "broker"),
        REDIS_URL="",
    )


def test_the_migrations_describe_the_models_exactly(tmp_path: Path) -> None:
    done = manage(["makemigrations", "--check", "--dry-run"], _sqlite_env(tmp_path), check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sqlite_ledger_is_append_only_after_a_full_migrate(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    manage(["migrate", "--noinput", "-v0"], env, timeout=300)
    _with_a_topup(env)
    db = sqlite3.connect(tmp_path / "dpp.sqlite3", isolation_level=None)  # autocommit: each statement stands alone
    try:
        assert {name for (name,) in db.execute(SQLITE_TRIGGER_LIST)} == sql.LEDGER_TRIGGERS["sqlite"]
        _assert_refused(
            db.execute,
            lambda table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]),  # noqa: S608 - constants
            sqlite3.IntegrityError,
        )
    finally:
        db.close()


# --- PostgreSQL -------------------------------------------------------------------------------------------


def _server_url(database: str) -> str:
    settings = connection.settings_dict
    auth = settings["USER"] or ""
    if settings.get("PASSWORD"):
        auth += f":{settings['PASSWORD']}"
    return f"postgres://{auth}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{database}"


@pytest.fixture
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the suite's PostgreSQL server (dropped afterwards); yields its URL."""
    name = f"{connection.settings_dict['NAME']}_chain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _server_url(name)
    finally:
        with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgresql_ledger_is_append_only_after_a_full_migrate(fresh_postgres_database: str) -> None:
    env = process_env(DATABASE_URL=fresh_postgres_database)
    manage(["migrate", "--noinput", "-v0"], env, timeout=300)
    _with_a_topup(env)
    with psycopg.connect(fresh_postgres_database, autocommit=True) as db:
        assert {name for (name,) in db.execute(PG_TRIGGER_LIST)} == sql.LEDGER_TRIGGERS["postgresql"]

        def count_rows(table: str) -> int:
            row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608 - constants
            assert row is not None
            return int(row[0])

        _assert_refused(db.execute, count_rows, psycopg.errors.IntegrityConstraintViolation)


def _as_migrated_before_the_squash(db: psycopg.Connection[Any]) -> None:
    """Make a freshly migrated database look like one migrated before the squash: the old migrations recorded
    instead of the squashed ones, and the staff groups without the views of models added after they were made."""
    db.execute("DELETE FROM django_migrations WHERE app IN ('dpp', 'billing', 'runs', 'reaper')")
    for app, names in SQUASHED.items():
        for name in names:
            db.execute("INSERT INTO django_migrations (app, name, applied) VALUES (%s, %s, now())", [app, name])
    db.execute(
        "DELETE FROM auth_group_permissions WHERE permission_id IN"
        " (SELECT id FROM auth_permission WHERE codename IN ('view_closedday', 'view_keyspend'))"
    )


def _granted(db: psycopg.Connection[Any], group: str) -> set[str]:
    rows = db.execute(
        "SELECT p.codename FROM auth_group g JOIN auth_group_permissions gp ON gp.group_id = g.id"
        " JOIN auth_permission p ON p.id = gp.permission_id WHERE g.name = %s",
        [group],
    )
    return {codename for (codename,) in rows}


def test_a_database_migrated_before_the_squash_is_taken_as_it_is(fresh_postgres_database: str) -> None:
    env = process_env(DATABASE_URL=fresh_postgres_database)
    manage(["migrate", "--noinput", "-v0"], env, timeout=300)
    _with_a_topup(env)
    with psycopg.connect(fresh_postgres_database, autocommit=True) as db:
        _as_migrated_before_the_squash(db)
        assert "view_closedday" not in _granted(db, "finance")
    plan = manage(["migrate", "--plan"], env).stdout
    assert "0001_squashed" not in plan  # nothing of the schema runs again on a database that has it
    assert "billing.0002_staff_groups" in plan
    manage(["migrate", "--noinput", "-v0"], env, timeout=300)
    with psycopg.connect(fresh_postgres_database, autocommit=True) as db:
        assert {"view_closedday", "view_keyspend", "topup", "adjust"} <= _granted(db, "finance")
        # the squashed migrations are recorded beside the ones they replace
        squashed = db.execute("SELECT COUNT(*) FROM django_migrations WHERE name LIKE '0001_squashed_%'").fetchone()
        assert squashed == (4,)
    _with_a_topup(env)  # the schema is today's: today's code posts to it


@pytest.mark.django_db
def test_the_suites_own_migrated_database_has_every_ledger_trigger() -> None:
    assert sql.ledger_triggers() == sql.LEDGER_TRIGGERS["postgresql"]


@pytest.mark.django_db
def test_on_postgresql_ensure_recreates_a_missing_trigger_and_keeps_the_others() -> None:
    with connection.cursor() as cursor:  # in the test's transaction: PostgreSQL's DDL rolls back with it
        cursor.execute("DROP TRIGGER billing_entry_append_only ON billing_ledgerentry")
    assert sql.ledger_triggers() == sql.LEDGER_TRIGGERS["postgresql"] - {"billing_entry_append_only"}
    with connection.schema_editor() as editor:
        sql.ledger_triggers_ensure(editor)
        sql.ledger_triggers_ensure(editor)  # a second run finds them all and does nothing
    assert sql.ledger_triggers() == sql.LEDGER_TRIGGERS["postgresql"]
