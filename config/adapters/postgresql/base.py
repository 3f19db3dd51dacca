"""Django's PostgreSQL backend, with a health check that costs a system call instead of a round trip.

With `CONN_HEALTH_CHECKS`, Django checks a persistent connection before the first query of every request by
running `SELECT 1`: one round trip on every request (a poll made three, a submit seven; measured in the submit
benchmark, docs/BENCHMARKS.md). A server that ends a connection — restart, crash, `pg_terminate_backend`,
idle timeout — tells the client: it sends a FATAL error and closes the socket, which then polls readable. An idle
connection in autocommit mode is never sent anything else unasked (no LISTEN here). So a connection that is
idle, in good standing and has nothing to read is taken as alive; anything else — something to read, a
transaction left open, a bad status — gets Django's own check, which reads it and closes the connection if it
fails. A peer that vanished without a word (a cable cut) passes both checks alike: `SELECT 1` would hang on it
as the request's first query does.

Upstream: Django's check is the `SELECT 1` of `is_usable()` by design (ticket #30398, django/django#14899, which
added CONN_HEALTH_CHECKS); no ticket or PR proposes a check without a round trip, nor a public hook for one.
The ENGINE on PostgreSQL is `config.adapters.postgresql` (config/settings.py).
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq

from config.adapters import WrittenAgainst

WRITTEN_AGAINST = WrittenAgainst(
    distribution="Django",
    version="5.2.19",
    sources={
        "django.db.backends.base.base.BaseDatabaseWrapper.close_if_health_check_failed": (
            "f72eb45356f4a9108c8299b1a616f582cb1b4de12848e0a2401363ec9c9eb2cd"
        ),
        "django.db.backends.postgresql.base.DatabaseWrapper.is_usable": (
            "c6d0cbdb5ef55c8654b98f9d3c0741b7d6bcd0c7b1241577737a23a534c2ae42"
        ),
    },
    attributes={"django.db.backends.base.base.BaseDatabaseWrapper": ("health_check_enabled", "health_check_done")},
)


class DatabaseWrapper(base.DatabaseWrapper):
    # Set by Django's BaseDatabaseWrapper; django-stubs does not declare them.
    health_check_enabled: bool
    health_check_done: bool

    def close_if_health_check_failed(self) -> None:
        pending = self.connection is not None and self.health_check_enabled and not self.health_check_done
        if pending and _quiet(self.connection.pgconn):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


def _quiet(pgconn: pq.abc.PGconn) -> bool:
    """Idle, in good standing, and nothing from the server waiting to be read."""
    if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
        return False
    poller = select.poll()
    try:
        poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):  # no socket (a closed connection): Django's check decides
        return False
