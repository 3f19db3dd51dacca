"""The ledger stays append-only after the whole migration chain, on both backends (issue 15, item 1).

Found from outside: on SQLite, 0007's table rebuild dropped 0003's triggers, so a fresh `make run` database took
UPDATE and DELETE on the ledger. Each test runs `manage.py migrate` in a child process on a database of its own
(a temp SQLite file, a new PostgreSQL database), posts a real top-up, then tries every forbidden statement on
each ledger table. The trigger lists are compared with the full expected set, so a later migration that drops
any of them fails here.
"""

from __future__ import annotations

import importlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection

from tests.processes import manage, process_env

FIX = importlib.import_module("billing.migrations.0009_append_only_triggers_again")
FORBIDDEN = {  # per ledger table: the statements the issue ran, and a no-op UPDATE (a trigger must refuse it too)
    "billing_ledgerentry": ("UPDATE {table} SET amount_micros = amount_micros + 100",),
    "billing_ledgertransaction": ("UPDATE {table} SET reason = 'rewritten'",),
}
SQLITE_TRIGGER_LIST = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
PG_TRIGGER_LIST = FIX.PG_TRIGGER_LIST


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


def _sqlite_triggers(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute(SQLITE_TRIGGER_LIST)}


def _assert_sqlite_append_only(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: each statement stands alone
    try:
        assert _sqlite_triggers(db) == FIX.SQLITE_TRIGGERS
        _assert_refused(
            db.execute,
            lambda table: int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]),  # noqa: S608 - constants
            sqlite3.IntegrityError,
        )
    finally:
        db.close()


def test_sqlite_ledger_is_append_only_after_a_full_migrate(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    manage(["migrate", "--noinput", "-v0"], env, timeout=300)
    _with_a_topup(env)
    _assert_sqlite_append_only(tmp_path / "dpp.sqlite3")


def test_sqlite_database_migrated_before_the_fix_gets_its_triggers_back(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    manage(["migrate", "billing", "0008", "--noinput", "-v0"], env, timeout=300)  # a database of before the fix
    manage(["migrate", "dpp", "--noinput", "-v0"], env, timeout=300)  # today's tenants (dpp needs only billing 0005)
    db = sqlite3.connect(tmp_path / "dpp.sqlite3")
    try:
        assert _sqlite_triggers(db) == set()  # what 0007's rebuild left: the state existing databases are in
    finally:
        db.close()
    manage(["migrate", "--noinput", "-v0"], env)
    _with_a_topup(env)  # with today's code, which needs today's schema
    _assert_sqlite_append_only(tmp_path / "dpp.sqlite3")


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
        assert {name for (name,) in db.execute(PG_TRIGGER_LIST)} == FIX.PG_TRIGGERS

        def count_rows(table: str) -> int:
            row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608 - constants
            assert row is not None
            return int(row[0])

        _assert_refused(db.execute, count_rows, psycopg.errors.IntegrityConstraintViolation)


@pytest.mark.django_db
def test_the_suites_own_migrated_database_has_every_ledger_trigger() -> None:
    with connection.cursor() as cursor:
        cursor.execute(PG_TRIGGER_LIST)
        assert {name for (name,) in cursor.fetchall()} == FIX.PG_TRIGGERS


@pytest.mark.django_db
def test_on_postgresql_the_fix_recreates_a_missing_trigger_and_keeps_the_others() -> None:
    with connection.cursor() as cursor:  # in the test's transaction: PostgreSQL's DDL rolls back with it
        cursor.execute("DROP TRIGGER billing_entry_append_only ON billing_ledgerentry")
        cursor.execute(PG_TRIGGER_LIST)
        assert {name for (name,) in cursor.fetchall()} == FIX.PG_TRIGGERS - {"billing_entry_append_only"}
        with connection.schema_editor() as editor:
            FIX.ensure_triggers(None, editor)
            FIX.ensure_triggers(None, editor)  # a second run finds them all and does nothing
        cursor.execute(PG_TRIGGER_LIST)
        assert {name for (name,) in cursor.fetchall()} == FIX.PG_TRIGGERS
