"""runs.charges: what each way of ending costs (SPEC §2, "Charges"), capped at the reservation."""

from __future__ import annotations

import pytest

from runs.charges import Ending, charge_for
from runs.models import Run, RunStatus

RESERVED = 50_000
MINIMUM_FEE = 5_000


def _run(reserved_micros: int = RESERVED, minimum_fee_micros: int = MINIMUM_FEE) -> Run:
    return Run(reserved_micros=reserved_micros, minimum_fee_micros=minimum_fee_micros)


@pytest.mark.parametrize(
    ("ending", "status", "charge"),
    [
        (Ending.COMPLETED, RunStatus.COMPLETED, 12_300),
        (Ending.ROLLED_FORWARD, RunStatus.COMPLETED, 12_300),
        (Ending.FAILED, RunStatus.FAILED, MINIMUM_FEE),
        (Ending.CANCELED_AFTER_START, RunStatus.CANCELED, MINIMUM_FEE),
        (Ending.WORKER_TIMEOUT, RunStatus.FAILED, MINIMUM_FEE),
        (Ending.ROLLED_BACK, RunStatus.FAILED, MINIMUM_FEE),
        (Ending.CANCELED_BEFORE_START, RunStatus.CANCELED, 0),
        (Ending.QUEUE_EXPIRED, RunStatus.EXPIRED, 0),
    ],
)
def test_each_ending_has_its_status_and_charge(ending: Ending, status: str, charge: int) -> None:
    assert ending.status == status
    assert charge_for(run=_run(), ending=ending, cost_micros=12_300) == charge


def test_every_ending_is_in_the_table_above() -> None:
    assert len(Ending) == 8


@pytest.mark.parametrize("ending", [Ending.COMPLETED, Ending.ROLLED_FORWARD])
def test_a_result_is_charged_its_cost_capped_at_the_reservation(ending: Ending) -> None:
    assert charge_for(run=_run(), ending=ending, cost_micros=0) == 0
    assert charge_for(run=_run(), ending=ending, cost_micros=RESERVED) == RESERVED
    assert charge_for(run=_run(), ending=ending, cost_micros=900_000) == RESERVED


def test_a_minimum_fee_is_never_more_than_the_reservation() -> None:
    tiny = _run(reserved_micros=3_000, minimum_fee_micros=5_000)  # not a state the database allows; the cap holds
    assert charge_for(run=tiny, ending=Ending.FAILED) == 3_000


@pytest.mark.parametrize("ending", [Ending.COMPLETED, Ending.ROLLED_FORWARD])
def test_an_ending_with_a_result_needs_its_cost(ending: Ending) -> None:
    with pytest.raises(ValueError, match="cost_micros is required"):
        charge_for(run=_run(), ending=ending)
