"""Issue 15, item 2: after a PostgreSQL restart every long-lived process is back at its next task.

Found from outside: with CELERY_DB_REUSE_MAX=100 Celery's Django fix-up drops a worker's connection only every 100
tasks, and the reaper's tasks did not check theirs, so after `pg_ctl -m fast restart` every reaper pass failed on
the dead connection (`the connection is closed`) for ~100 passes while a crashed run held its money.

The stack is the Procfile's (web, runs worker, solo reaper worker, beat) on a throwaway PostgreSQL started from
local binaries (tests/run.py's), with a lease of 3 s, a reaper pass every second and a ledger audit every 2 s.
The test process cannot see that database: it drives the stack over HTTP and `manage.py`, like the embedded one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dpp.money import minimum_fee
from reaper.tasks import audit_ledger
from tests.e2e.harness import Stack, assert_money_balanced, fast_env, purge_queues
from tests.processes import Process, gunicorn, manage, procfile_process, wait_until
from tests.run import Services

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

RESERVED = 50_000  # the diagnostic run reserves "0.0500"
SUCCEEDED = re.compile(r"Task dpp\.reaper\.(reconcile|audit_ledger)\[[^\]]+\] succeeded")


@pytest.fixture
def throwaway_postgres() -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL server of this test's own (tests/run.py's, from local binaries): its URL and its restart."""
    services = Services()
    try:
        url = services._throwaway_postgres()
        assert url is not None, "initdb and pg_ctl are needed on PATH"
        assert services.postgres_fast_restart is not None
        yield url, services.postgres_fast_restart
    finally:
        services.stop()


def _successes(proc: Process, task: str, since: int = 0) -> int:
    return sum(1 for match in SUCCEEDED.finditer(proc.log()[since:]) if match.group(1) == task)


def _wait(stack: Stack, check: Callable[[], object], timeout: float, what: str) -> None:
    try:
        wait_until(check, timeout, what=what)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{stack.logs()}") from None


@contextlib.contextmanager
def _procfile_stack(env: dict[str, str]) -> Iterator[tuple[Stack, Process, Process]]:
    """web, worker, reaper and beat as the Procfile starts them; yields the stack, the runs worker and the reaper."""
    purge_queues()
    with (
        gunicorn(env) as base_url,
        procfile_process("worker", env, ready=" ready.") as worker,
        procfile_process("reaper", env, ready=" ready.") as reaper,
        procfile_process("beat", env, ready="beat: Starting") as beat,
    ):
        yield Stack("pg-restart", base_url, env, embedded=True, workers=[worker, reaper, beat]), worker, reaper


def test_after_a_postgresql_restart_the_reaper_ends_a_killed_run_and_the_audit_runs(
    throwaway_postgres: tuple[str, Callable[[], None]], tmp_path: Path
) -> None:
    database_url, restart_postgres = throwaway_postgres
    env = fast_env(
        DATABASE_URL=database_url,
        DPP_STORAGE="local",
        DPP_VAR_DIR=str(tmp_path),  # beat's schedule file of its own
        DPP_LOCAL_STORAGE_DIR=str(tmp_path / "results"),
        # No scheduled audit: the test sends its own, so that the reaper's first query after the restart is a
        # reconcile pass's, as in the drill (an audit runs in a transaction, and a failed rollback makes Django
        # drop the connection: that one recovered by luck).
        DPP_LEDGER_AUDIT_INTERVAL_S="0",
    )
    manage(["migrate", "--noinput", "-v0"], env, timeout=300)
    with _procfile_stack(env) as (stack, worker, reaper):
        tenant = stack.tenant()
        api = stack.api(tenant)
        audit_ledger.delay()
        _wait(stack, lambda: _successes(reaper, "reconcile") and _successes(reaper, "audit_ledger"), 30, "passes")

        restart_postgres()  # every process's connection is now a dead one
        restarted_at = len(reaper.log())

        running = api.diagnostic(sleep_ms=60_000, cost_usd="0.0123")
        api.wait(running, frozenset({"PROCESSING"}), timeout=20)
        worker.kill()  # the runs worker's whole process group, mid-run
        worker.proc.wait(10)
        killed = api.wait(running, timeout=3 + 8)  # the lease (3 s), then a few reaper passes (1 s each)

        assert (killed["status"], killed["error"]["reason_code"]) == ("FAILED", "WORKER_TIMEOUT"), stack.logs()
        audit_ledger.delay()
        _wait(stack, lambda: _successes(reaper, "audit_ledger", restarted_at) == 1, 10, "the audit after the restart")
        assert "connection is closed" not in reaper.log()[restarted_at:]
        assert killed["cost"]["used_usd"] == killed["cost"]["minimum_fee_usd"] == "0.0050"
        assert_money_balanced(stack, tenant, minimum_fee(RESERVED))
