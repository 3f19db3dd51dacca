"""Key spend counters and the settle (SPEC §8): a settle gives back exactly what it released, to the window the
run was accepted in — for the key and every limited key above it — across a UTC midnight and a month end."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from freezegun import freeze_time

from billing.models import KeySpend
from runs import services
from runs.audit import full_audit
from runs.models import Run
from runs.results import Envelope
from tests.helpers.api import body, submit
from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.runs.keys_support import Key, child_key, root_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def root() -> Key:
    return root_key(make_persona(plan="unlimited", credit_micros=100 * USD))


def _run(key: Key, max_cost_usd: str = "0.0500") -> Run:
    response = submit(key.client, body(max_cost_usd=max_cost_usd))
    assert response.status_code == 202, response.content
    return Run.objects.get(pk=json.loads(response.content)["run_id"])


def _fail(run: Run) -> None:
    """The worker starts the run and it fails: charged the minimum fee (0.0050 of 0.0500)."""
    lease = services.run_lease(run_id=run.pk)
    assert lease is not None
    assert services.run_fail(run=lease.run, lease_token=lease.token, reason_code="PACK_FAILED", detail="test")


def _counters(key: Key) -> dict[str, int]:
    rows = KeySpend.objects.filter(api_key__prefix=key.prefix)
    return {f"{row.window_kind} {row.window_start:%Y-%m-%d}": row.spent_micros for row in rows}


def test_a_settle_after_midnight_gives_back_to_the_day_the_run_was_accepted_in(root: Key) -> None:
    parent = child_key(root, can_manage_keys=True, spend_limit_micros=10 * USD, spend_window="total")
    key = child_key(parent, spend_limit_micros=USD, spend_window="day")
    with freeze_time("2027-01-31 23:59:59.900000"):
        failed, canceled = _run(key), _run(key)
    with freeze_time("2027-02-01 00:00:00.100000"):
        _fail(failed)  # released 0.0450
        services.run_cancel(tenant=failed.tenant, run_id=canceled.pk)  # released 0.0500
        _run(key, "0.0300")  # counts in the new day
    assert _counters(key) == {"day 2027-01-31": 5_000, "day 2027-02-01": 30_000}
    assert _counters(parent) == {"total 1970-01-01": 35_000}
    assert full_audit().ok


def test_a_settle_after_the_month_end_gives_back_to_the_month_the_run_was_accepted_in(root: Key) -> None:
    key = child_key(root, spend_limit_micros=USD, spend_window="month")
    with freeze_time("2027-02-28 23:59:59"):
        run = _run(key)
        _run(key, "0.0200")
    with freeze_time("2027-03-01 00:00:01"):
        _fail(run)
        _run(key, "0.0100")
    assert _counters(key) == {"month 2027-02-01": 5_000 + 20_000, "month 2027-03-01": 10_000}
    assert full_audit().ok


def test_a_completed_run_counts_at_its_charge(root: Key) -> None:
    key = child_key(root, spend_limit_micros=USD, spend_window="total")
    run = _run(key, "0.0500")
    lease = services.run_lease(run_id=run.pk)
    assert lease is not None
    claimed = services.run_claim(run_id=run.pk, lease_token=lease.token)
    assert claimed is not None
    stored = Envelope(key=f"results/x/{uuid.uuid4()}.json", sha256="0" * 64, size=10, cost_micros=30_000)
    assert services.run_commit(run=claimed, stored=stored)
    assert _counters(key) == {"total 1970-01-01": 30_000}
    spend: dict[str, Any] = json.loads(key.client.get(f"/v1/keys/{key.prefix}").content)["spend"]
    assert (spend["spent_usd"], spend["remaining_usd"], spend["window"]) == ("0.0300", "0.9700", "total")
    assert datetime.fromisoformat(spend["window_start"]) <= datetime.now(tz=UTC)
    assert full_audit().ok
