"""config.adapters.postgresql: Django's backend, whose per-request health check asks the socket, not the server."""

from __future__ import annotations

import select
import time
from pathlib import Path

import psycopg
import pytest
import requests
from django.db import DEFAULT_DB_ALIAS, connection, connections

from config.adapters.postgresql.base import DatabaseWrapper
from tests import processes
from tests.helpers.personas import Persona
from tests.processes import gunicorn

pytestmark = pytest.mark.django_db(transaction=True)  # autocommit: the connection sits idle between statements


@pytest.fixture(autouse=True)
def _reconnect_after() -> object:
    """A test that ended its own connection leaves a new one for pytest-django's teardown."""
    yield
    connection.close()


def _wrapper() -> DatabaseWrapper:
    wrapper = connections[DEFAULT_DB_ALIAS]  # `connection` is a proxy to it
    assert isinstance(wrapper, DatabaseWrapper)
    return wrapper


def _check_as_a_request_would() -> None:
    _wrapper().health_check_done = False  # what Django's request_started handler resets
    connection.close_if_health_check_failed()


def _traced(tmp_path: Path, action: object) -> str:
    """The protocol messages the connection exchanged during `action()` (libpq's trace)."""
    path = tmp_path / "trace.txt"
    pgconn = connection.connection.pgconn
    with path.open("w") as trace:
        pgconn.trace(trace.fileno())
        try:
            action()  # type: ignore[operator]
        finally:
            pgconn.untrace()
    return path.read_text()


def _terminate(pids: list[int]) -> None:
    """End these backends from another connection, and wait until they are gone (their sockets closed)."""
    with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
        for pid in pids:
            assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]).fetchone() != (0,):
            assert time.monotonic() < deadline, "backends still there 10 s after pg_terminate_backend"
            time.sleep(0.02)


def test_the_settings_use_it_with_health_checks_on() -> None:
    assert _wrapper().health_check_enabled


def test_an_idle_healthy_connection_passes_without_a_round_trip(tmp_path: Path) -> None:
    connection.ensure_connection()
    raw = connection.connection
    trace = _traced(tmp_path, _check_as_a_request_would)
    assert trace == ""  # Django's own check sends "SELECT 1" and reads its answer
    assert _wrapper().health_check_done
    assert connection.connection is raw


def test_a_connection_inside_a_transaction_gets_djangos_own_check(tmp_path: Path) -> None:
    connection.ensure_connection()
    connection.connection.execute("BEGIN")
    try:
        trace = _traced(tmp_path, _check_as_a_request_would)
    finally:
        connection.connection.execute("ROLLBACK")
    assert '"SELECT 1"' in trace


def test_a_connection_the_server_ended_is_closed_and_the_next_query_reconnects() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (old_pid,) = cursor.fetchone()
    _terminate([old_pid])
    _check_as_a_request_would()
    assert connection.connection is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (new_pid,) = cursor.fetchone()
    assert new_pid != old_pid


def test_a_connection_closed_on_this_side_is_replaced() -> None:
    connection.ensure_connection()
    connection.connection.close()  # what a driver does after a fatal error on its side
    _check_as_a_request_would()
    assert connection.connection is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_the_socket_of_an_ended_connection_polls_readable() -> None:
    """What the check relies on: the server's FATAL message and its close reach the client's socket."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    assert poller.poll(0) == []
    _terminate([connection.connection.info.backend_pid])
    assert poller.poll(5000) != []


@pytest.mark.e2e
def test_gunicorn_answers_the_first_request_after_its_connections_were_ended(owner: Persona) -> None:
    """Persistent connections (the image's CONN_MAX_AGE) killed under a running API: the next request is served on
    a new connection, not answered 503. Without a health check this request fails."""
    headers = {"Authorization": f"Bearer {owner.api_key}"}
    with gunicorn(workers=1, threads=1) as base_url:
        assert requests.get(f"{base_url}/v1/account", headers=headers, timeout=10).status_code == 200
        connection.ensure_connection()
        own = connection.connection.info.backend_pid  # this test's, not the API's
        with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND pid <> %s",
                [own],
            ).fetchall()
        api_pids = [pid for (pid,) in rows]
        assert api_pids, "the API kept no connection open"
        _terminate(api_pids)
        answer = requests.get(f"{base_url}/v1/account", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["tenant_id"] == owner.tenant.pk
