"""Fixtures of the API acceptance tests (SPEC §4); their helpers are in tests/helpers/ (api, problems, states).

Everything goes through the real HTTP stack (DRF test client, or requests against a real gunicorn) on the real
PostgreSQL and Redis. Runs are moved forward without a worker by calling the worker's task body
(tests.helpers.states.execute) or the run services directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import current_app
from django.conf import settings

from tests.helpers.money import USD
from tests.helpers.personas import Persona, make_persona


@pytest.fixture
def unlimited() -> Persona:
    """A tenant on plan unlimited (the diagnostic pack) with 10 USD."""
    return make_persona(plan="unlimited", credit_micros=10 * USD)


@pytest.fixture(scope="session", autouse=True)
def _purge_task_queue() -> Any:
    """Transactional tests publish real tasks that no worker consumes here: leave this suite's queue empty."""
    yield
    if settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        with current_app.connection_for_write() as conn:
            for queue in current_app.conf.task_queues:  # the runs' and the reaper's
                conn.default_channel.queue_purge(queue.name)
