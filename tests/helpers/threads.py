"""Real threads for races, each with its own PostgreSQL connection."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection, connections


def close_thread_connection() -> None:
    """End of a worker thread of a test: its own database connection must not outlive it."""
    connection.close()


def at_once(targets: list[Callable[[], None]]) -> list[BaseException]:
    """Start every target at once (a barrier), each thread closing its own connection; the errors they raised."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def run(target: Callable[[], None]) -> None:
        try:
            barrier.wait(timeout=30)
            target()
        except BaseException as exc:  # handed to the test thread, which asserts on it
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a thread hung (deadlock?)"
    return errors
