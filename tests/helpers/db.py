"""Database plumbing of the tests' own threads."""

from __future__ import annotations

from django.db import connection


def close_thread_connection() -> None:
    """End of a worker thread of a test: its own database connection must not outlive it."""
    connection.close()
