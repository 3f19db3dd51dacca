"""Issue 15, item 5: a backlog costs O(N · log T) publishes, not one per run per reaper pass.

Found from outside: after a broker outage under load, 7,417 re-drives went out for about 1,190 runs, because
every QUEUED run older than DPP_REDRIVE_AFTER_S was published again at every pass. Now the n-th re-drive of a run
waits DPP_REDRIVE_AFTER_S × 2ⁿ after its last publish (reaper.services.redrive_delays).

500 runs wait behind a stopped worker while reaper passes run every 5 s for 5 minutes of a frozen, stepped clock
(passes may run that often: several reapers, or `reconcile` by hand). The publishes are counted where they end
up: the messages in the runs' queue on the real Redis broker. Then a real worker drains it all.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Max, Sum
from freezegun import freeze_time
from prometheus_client import REGISTRY

from billing.models import LedgerTransaction
from reaper.services import REDRIVE_ATTEMPT_LABELS, reconcile_once, redrive_delays
from runs.models import Run, RunStatus
from tests.e2e.harness import E2E, purge_queues
from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.helpers.states import queued_run as submit
from tests.processes import celery_worker, process_env, wait_until

pytestmark = [*E2E]

RUNS = 500
PASS_EVERY_S = 5
WATCHED_S = 5 * 60
COST_MICROS = 1_000  # each run succeeds at "0.0010"


def _messages_per_run() -> Counter[str]:
    """The execute tasks waiting in the runs' queue on the broker, by run id (each message names its run)."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    messages = broker.lrange(settings.DPP_TASK_QUEUE, 0, -1)
    per_run: Counter[str] = Counter()
    for raw in messages:
        headers: dict[str, Any] = json.loads(raw)["headers"]
        assert headers["task"] == "dpp.runs.execute", headers
        per_run[headers["argsrepr"].strip("[]'")] += 1
    return per_run


def _redrives(attempt: str) -> float:
    return REGISTRY.get_sample_value("dpp_reaper_redrives_total", {"attempt": attempt}) or 0.0


def test_a_backlog_behind_a_stopped_worker_is_re_driven_with_a_backoff(settings: Any) -> None:
    settings.DPP_REDRIVE_AFTER_S = 60  # the defaults: the first re-drive after 1 minute, the next 2 minutes later
    settings.DPP_QUEUE_TTL_S = 3600
    settings.DPP_REAPER_BATCH = RUNS
    assert redrive_delays() == [60, 120, 240, 480, 900]
    purge_queues()
    tenant = make_persona(plan="unlimited", credit_micros=100 * USD, prefix="backlog")
    runs = {str(submit(tenant, inputs={"cost_usd": "0.0010"}).pk) for _ in range(RUNS)}  # published on commit
    assert _messages_per_run() == Counter(dict.fromkeys(runs, 1))

    redrives_before = {attempt: _redrives(attempt) for attempt in REDRIVE_ATTEMPT_LABELS}
    last_created = Run.objects.filter(pk__in=runs).aggregate(last=Max("created_at"))["last"]
    redriven = 0
    for elapsed in range(0, WATCHED_S + 1, PASS_EVERY_S):  # no worker: every run stays QUEUED
        with freeze_time(last_created + timedelta(seconds=elapsed)):
            report = reconcile_once()
        assert (report.redrive_failed, report.expired_queued, report.actions_failed) == (0, 0, 0)
        redriven += report.redriven

    published = _messages_per_run()
    assert set(published) == runs
    # The submit's publish, then re-drives about 1 and 3 minutes after it (the next would be due after 7 minutes).
    # Before the backoff: one every 65 s, 5 publishes each (2,500 in all).
    assert max(published.values()) <= 4
    assert Counter(published.values()) == {3: RUNS}
    assert redriven == 2 * RUNS
    counted = {attempt: _redrives(attempt) - before for attempt, before in redrives_before.items()}
    assert counted == {"1": RUNS, "2": RUNS, "3": 0, "4": 0, "5+": 0}  # what /metrics says
    assert set(Run.objects.filter(pk__in=runs).values_list("redrive_count", flat=True)) == {2}

    with celery_worker(process_env(), concurrency=2, name="returns"):
        wait_until(
            lambda: not Run.objects.filter(pk__in=runs).exclude(status=RunStatus.COMPLETED).exists(),
            300,
            interval=1,
            what="the backlog drained",
        )
    finished = Run.objects.filter(pk__in=runs)
    assert finished.aggregate(charged=Sum("charged_micros"))["charged"] == RUNS * COST_MICROS
    settles = LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.SETTLE, run_id__in=runs)
    assert settles.count() == RUNS  # each run executed once, whatever number of copies of its task it had
    assert set(finished.values_list("version", flat=True)) == {3}  # leased, claimed, committed: nothing else won
