"""What a run is charged when it ends (SPEC §2, "Charges"), decided here for every way a run can end.

Success: the pack's actual cost; failure, timeout or cancel after start: the minimum fee; cancel before start or
expiry in the queue: nothing (a full release). Every charge is capped at the reservation, here and nowhere else.
"""

from __future__ import annotations

from enum import Enum

from runs.models import Run, RunStatus


class Basis(Enum):
    """What an ending charges before the cap."""

    COST = "the pack's actual cost"
    MINIMUM_FEE = "the minimum fee"
    NOTHING = "nothing"


class Ending(Enum):
    """Each way a run ends: the status it ends in and what it is charged."""

    # its result committed by the worker
    COMPLETED = ("completed", RunStatus.COMPLETED, Basis.COST)
    # a stale claim's valid envelope committed by the reaper (the cost read back from the envelope)
    ROLLED_FORWARD = ("rolled forward", RunStatus.COMPLETED, Basis.COST)
    # started, then the pack failed: PACK_FAILED, TIMEBOX_EXCEEDED, URL_BLOCKED, FETCH_FAILED
    FAILED = ("failed", RunStatus.FAILED, Basis.MINIMUM_FEE)
    # a cancel requested while it ran: stopped by its worker, or its lease expired meanwhile
    CANCELED_AFTER_START = ("canceled after start", RunStatus.CANCELED, Basis.MINIMUM_FEE)
    # its worker stopped heartbeating before it claimed the finalize
    WORKER_TIMEOUT = ("worker timeout", RunStatus.FAILED, Basis.MINIMUM_FEE)
    # a stale claim without a valid envelope
    ROLLED_BACK = ("rolled back", RunStatus.FAILED, Basis.MINIMUM_FEE)
    CANCELED_BEFORE_START = ("canceled before start", RunStatus.CANCELED, Basis.NOTHING)
    QUEUE_EXPIRED = ("expired in the queue", RunStatus.EXPIRED, Basis.NOTHING)

    def __init__(self, label: str, status: RunStatus, basis: Basis) -> None:
        self.label = label
        self.status = status
        self.basis = basis


def charge_for(*, run: Run, ending: Ending, cost_micros: int | None = None) -> int:
    """The run's charge in micros when it ends so; `cost_micros` (the pack's, uncapped) for an ending with a result.
    Never more than the run reserved."""
    if ending.basis is Basis.COST:
        if cost_micros is None:
            raise ValueError(f"a run {ending.label} is charged its cost: cost_micros is required")
        charge = cost_micros
    elif ending.basis is Basis.MINIMUM_FEE:
        charge = run.minimum_fee_micros
    else:
        charge = 0
    return min(charge, run.reserved_micros)
