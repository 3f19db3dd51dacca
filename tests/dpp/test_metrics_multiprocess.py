"""/metrics under gunicorn with PROMETHEUS_MULTIPROC_DIR set (the image, `make run`): the counters of every
worker process add up, and the gauges read from the database are served beside them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.processes import gunicorn, process_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REQUESTS = 24
_UNMATCHED_404 = re.compile(r'^dpp_http_requests_total\{method="GET",route="unmatched",status="404"\} (\S+)$', re.M)


def test_metrics_add_up_every_worker_and_carry_the_database_gauges(tmp_path: Path) -> None:
    env = process_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    with gunicorn(env, workers=2, threads=2) as base_url:
        for _ in range(REQUESTS):  # each on a new connection: the balanced worker spreads them over both
            assert (
                requests.get(f"{base_url}/no/such/path", headers={"Connection": "close"}, timeout=10).status_code == 404
            )
        text = requests.get(f"{base_url}/metrics", timeout=10).text
    writers = {path.stem.rsplit("_", 1)[1] for path in tmp_path.glob("counter_*.db")}
    assert len(writers) >= 2, writers  # more than one process counted requests...
    assert [float(value) for value in _UNMATCHED_404.findall(text)] == [REQUESTS]  # ...and /metrics sums them
    for gauge in ("dpp_audit_flags_open", "dpp_runs_queued", "dpp_runs_lease_expired", "dpp_runs_claim_stale"):
        assert re.search(rf"^{gauge} \d", text, re.M), gauge
