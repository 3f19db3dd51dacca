"""Issue 5, item 4: a real worker keeps the timebox, and a cancel over HTTP stops a running pack.

With DPP_LEASE_S=3 the heartbeat beats every second, so a cancel requested while the run is PROCESSING must end
it CANCELED (minimum fee) within about a second, long before the pack's own sleep would have ended.
"""

from __future__ import annotations

import time

from dpp.money import minimum_fee
from tests.e2e.harness import E2E, assert_money_balanced, redis_stack, settles_of

pytestmark = [*E2E]


def test_timebox_exceeded_fails_with_minimum_fee() -> None:
    with redis_stack() as stack:
        tenant = stack.tenant()
        api = stack.api(tenant)
        with stack.worker(concurrency=1):
            inputs = {"sleep_ms": 8_000, "cost_usd": "0.0300"}
            run_id = api.submit("diagnostic", inputs, "0.0500", timebox_sec=1)
            started = time.monotonic()
            body = api.wait(run_id, timeout=20)
            elapsed = time.monotonic() - started

        assert (body["status"], body["money_state"]) == ("FAILED", "SETTLED")
        assert body["error"]["reason_code"] == "TIMEBOX_EXCEEDED"
        assert body["cost"]["used_usd"] == body["cost"]["minimum_fee_usd"] == "0.0050"
        assert body["result"] is None
        assert elapsed < 5, f"the 1 s timebox took {elapsed:.1f} s to end the run"  # not the 8 s sleep
        assert settles_of(run_id) == 1
        assert_money_balanced(stack, tenant, minimum_fee(50_000))


def test_cancel_while_processing_ends_canceled_at_next_heartbeat() -> None:
    with redis_stack() as stack:
        tenant = stack.tenant()
        api = stack.api(tenant)
        with stack.worker(concurrency=1):
            run_id = api.diagnostic(sleep_ms=20_000, cost_usd="0.0300", max_cost_usd="0.5000")
            api.wait(run_id, frozenset({"PROCESSING"}), timeout=15)
            answer = api.session.post(api.url(f"/v1/runs/{run_id}/cancel"), timeout=10)
            asked = time.monotonic()
            assert answer.status_code == 202, answer.text
            assert answer.json()["status"] == "PROCESSING"
            body = api.wait(run_id, timeout=10)
            elapsed = time.monotonic() - asked
            again = api.session.post(api.url(f"/v1/runs/{run_id}/cancel"), timeout=10)

        assert (body["status"], body["money_state"]) == ("CANCELED", "SETTLED")
        assert body["error"]["reason_code"] == "CANCELED_BY_CLIENT"
        assert body["cost"]["used_usd"] == body["cost"]["minimum_fee_usd"] == "0.0100"  # 2 % of 0.5000
        assert elapsed < 5, f"the cancel took {elapsed:.1f} s (heartbeat every 1 s; the pack sleeps 20 s)"
        assert again.status_code == 409
        assert again.json()["reason_code"] == "RUN_TERMINAL"
        assert settles_of(run_id) == 1
        assert_money_balanced(stack, tenant, minimum_fee(500_000))
