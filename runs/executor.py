"""What a worker does with one delivery of a run (SPEC §3.2): lease → execute with a heartbeat → claim →
upload the envelope → commit. A crash between any two steps leaves a state the reaper finishes.

The worker finalizes nothing once its lease is lost; a cancel request seen by the heartbeat stops the pack and
ends the run CANCELED with the minimum fee. Fault points (`DPP_ENABLE_FAULTS=1`, `DPP_FAULT_POINT=…`) make the
process die at once at a chosen step, for chaos drills.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from packs.base import PackContext, PackError, PackInterrupted
from packs.registry import get_pack
from runs import results, services
from runs.charges import Ending, charge_for
from runs.models import Run
from runs.submission import url_policy

logger = logging.getLogger("dpp.runs.executor")


def fault(point: str) -> None:
    """Die here, now, if a drill asked for it (never by default)."""
    if settings.DPP_ENABLE_FAULTS and point == settings.DPP_FAULT_POINT:
        logger.critical("fault point %s: the worker process dies now", point)
        os._exit(137)


class Heartbeat:
    """A thread renewing the lease every DPP_LEASE_S / 3; it notices a lost lease and a cancel request."""

    def __init__(self, run_id: uuid.UUID, lease_token: uuid.UUID) -> None:
        self.run_id, self.lease_token = run_id, lease_token
        self.interval = settings.DPP_LEASE_S / 3
        self.lost = threading.Event()
        self.cancel_requested = threading.Event()
        self._stop = threading.Event()
        # The thread runs in a copy of the task's context, so its log lines carry the run's trace id too.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name=f"heartbeat-{run_id}", daemon=True)

    def should_stop(self) -> bool:
        return self.lost.is_set() or self.cancel_requested.is_set()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.beat()
                if self.lost.is_set():
                    return
        finally:
            connection.close()  # this thread's own connection

    def beat(self) -> None:
        try:
            state = services.run_heartbeat(run_id=self.run_id, lease_token=self.lease_token)
        except Exception:  # a database hiccup: the lease is still ours until it expires
            logger.warning("heartbeat of run %s failed; retrying", self.run_id, exc_info=True)
            return
        if state == services.HeartbeatState.LOST:
            logger.warning("run %s: lease lost; this worker stops and finalizes nothing", self.run_id)
            self.lost.set()
        elif state == services.HeartbeatState.CANCEL_REQUESTED:
            self.cancel_requested.set()


class Ended(Enum):
    """What the pack's execution came to."""

    SUCCEEDED = "succeeded"  # a result and its cost
    FAILED = "failed"  # a reason code the run carries
    INTERRUPTED = "interrupted"  # a cancel or a lost lease stopped it


@dataclass(frozen=True)
class Outcome:
    ended: Ended
    data: dict[str, Any] = field(default_factory=dict)
    cost_micros: int = 0  # the pack's actual cost, uncapped: runs.charges decides the charge
    reason_code: str = ""
    detail: str = ""


def _failed(reason_code: str, detail: str) -> Outcome:
    return Outcome(Ended.FAILED, reason_code=reason_code, detail=detail)


def _execute_pack(run: Run, heartbeat: Heartbeat) -> Outcome:
    pack = get_pack(run.pack_type)
    if pack is None:
        return _failed("PACK_FAILED", f"pack {run.pack_type!r} is not installed on this worker")
    deadline = time.monotonic() + run.timebox_sec
    context = PackContext(
        run_id=str(run.pk),
        trace_id=run.trace_id,
        max_cost_micros=run.reserved_micros,
        deadline=deadline,
        should_stop=heartbeat.should_stop,
        url_policy=url_policy(),
    )
    try:
        result = pack.execute(run.inputs, context)
    except PackInterrupted:
        return Outcome(Ended.INTERRUPTED)
    except PackError as exc:
        return _failed(exc.reason_code, exc.detail)
    except Exception as exc:  # a bug or Celery's soft time limit: the run fails, the worker lives on
        logger.exception("pack %s raised on run %s", run.pack_type, run.pk)
        reason = "TIMEBOX_EXCEEDED" if type(exc).__name__ == "SoftTimeLimitExceeded" else "PACK_FAILED"
        return _failed(reason, "the pack stopped with an internal error")
    if time.monotonic() > deadline:
        return _failed("TIMEBOX_EXCEEDED", f"the run took longer than {run.timebox_sec} s")
    return Outcome(Ended.SUCCEEDED, data=result.data, cost_micros=result.cost_micros)


# Pauses between attempts to upload an envelope. A failed upload leaves the run CLAIMED, which the reaper rolls
# back (minimum fee, no result) once DPP_FINALIZE_STALE_S (120 s) has passed: a blip of the storage is worth a
# few seconds of retrying. The key is the same each time, so a retry overwrites a partial attempt.
UPLOAD_RETRY_PAUSES_S = (0.5, 1.0, 2.0)


def _store(*, key: str, content: bytes, cost_micros: int) -> results.Envelope:
    for attempt, pause in enumerate(UPLOAD_RETRY_PAUSES_S, start=1):
        try:
            return results.envelope_store(key=key, content=content, cost_micros=cost_micros)
        except Exception as exc:  # any storage failure is worth the retry
            logger.warning(
                "upload of envelope %s failed (attempt %d: %s); retrying in %.1f s", key, attempt, exc, pause
            )
            time.sleep(pause)
    # The last attempt: if it fails too, the task fails and the claimed run is the reaper's.
    return results.envelope_store(key=key, content=content, cost_micros=cost_micros)


def _finalize_success(run: Run, lease_token: uuid.UUID, outcome: Outcome) -> str:
    claimed = services.run_claim(run_id=run.pk, lease_token=lease_token)
    if claimed is None or claimed.finalize_token is None:
        run.refresh_from_db()
        if run.cancel_requested_at is not None:  # the cancel landed between our last look and the claim
            return "canceled" if services.run_cancel_started(run=run, lease_token=lease_token) else "lease-lost"
        return "lease-lost"
    fault("after_claim")
    # The envelope records what the run is charged for its result: the pack's cost, capped (as it always has).
    cost = charge_for(run=claimed, ending=Ending.COMPLETED, cost_micros=outcome.cost_micros)
    key = results.envelope_key(claimed, claimed.finalize_token)
    content = results.envelope_bytes(
        run=claimed,
        finalize_token=claimed.finalize_token,
        data=outcome.data,
        cost_micros=cost,
        finished_at=timezone.now(),
    )
    envelope = _store(key=key, content=content, cost_micros=cost)
    fault("after_upload")
    fault("before_commit")
    return "completed" if services.run_commit(run=claimed, stored=envelope) else "commit-lost"


def _finalize(run: Run, lease_token: uuid.UUID, heartbeat: Heartbeat, outcome: Outcome) -> str:
    if heartbeat.lost.is_set():
        return "lease-lost"
    if outcome.ended is Ended.SUCCEEDED:
        return _finalize_success(run, lease_token, outcome)  # the claim itself re-reads the run
    run.refresh_from_db()
    # A cancel request wins over whatever the pack did: the run ends CANCELED with the minimum fee (SPEC §4).
    if outcome.ended is Ended.INTERRUPTED or run.cancel_requested_at is not None:
        return "canceled" if services.run_cancel_started(run=run, lease_token=lease_token) else "lease-lost"
    ok = services.run_fail(run=run, lease_token=lease_token, reason_code=outcome.reason_code, detail=outcome.detail)
    return f"failed:{outcome.reason_code}" if ok else "lease-lost"


def run_execute(*, run_id: uuid.UUID) -> str:
    """Execute one delivery of a run; returns what happened (for logs and tests). In a worker the task's
    prerun signal has bound the run's ids already (runs.tasks), also for the lines written before the run is read."""
    close_old_connections()
    lease = services.run_lease(run_id=run_id)
    if lease is None:
        logger.info("run %s is not QUEUED (duplicate or late delivery): acknowledged, nothing done", run_id)
        return "not-leased"
    run = lease.run
    with run.log_ids():
        logger.info("run %s leased (%s)", run.pk, run.pack_type)
        fault("after_lease")
        with Heartbeat(run.pk, lease.token) as heartbeat:
            outcome = _execute_pack(run, heartbeat)
        what = _finalize(run, lease.token, heartbeat, outcome)
        logger.info("run %s: %s", run.pk, what)
        return what
