"""ops/prometheus-rules.yml and ops/grafana-dashboard.json: they parse, and every metric they name is served by the
API's /metrics or by a worker's metrics port (DPP_WORKER_METRICS_PORT, multiprocess mode), both scraped here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
import yaml
from django.test import Client

from runs.models import Run, RunStatus
from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.helpers.states import queued_run
from tests.processes import ROOT, celery_worker, free_port, process_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

_METRIC = re.compile(r"\b(dpp_[a-z0-9_]+)")
_SERVED = re.compile(r"^(?:# TYPE )?(dpp_[a-z0-9_]+)", re.M)
_SUFFIXES = ("_bucket", "_count", "_sum")


def _rule_expressions() -> list[str]:
    document = yaml.safe_load((ROOT / "ops" / "prometheus-rules.yml").read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert all(rule["alert"] and rule["expr"] for rule in rules)
    return [str(rule["expr"]) for rule in rules]


def _dashboard_expressions() -> list[str]:
    document = json.loads((ROOT / "ops" / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in document["panels"] for target in panel["targets"]]


def _base(name: str) -> str:
    """A histogram's series (`_bucket`, `_count`, `_sum`) by the histogram's name."""
    for suffix in _SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def _served(text: str) -> set[str]:
    # Sample names, and the names of metrics that have no sample yet (a labelled one no process has counted).
    return {_base(name) for name in _SERVED.findall(text)}


def test_the_worker_serves_its_metrics_and_the_ops_files_name_only_served_metrics(tmp_path: Path) -> None:
    port = free_port()
    env = process_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), DPP_WORKER_METRICS_PORT=str(port))
    finished = re.compile(r'^dpp_runs_finished_total\{[^}]*pack="diagnostic"[^}]*status="COMPLETED"[^}]*\} 1\.0$', re.M)
    with celery_worker(env, concurrency=2):
        run = queued_run(make_persona(plan="unlimited", credit_micros=1 * USD))
        wait_until(lambda: Run.objects.get(pk=run.pk).status == RunStatus.COMPLETED, 60, what="run completed")
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: finished.search(requests.get(url, timeout=5).text), 10, what="worker counted the run")
        worker_text = requests.get(url, timeout=5).text
    assert re.search(r'^dpp_run_queue_wait_seconds_count\{pack="diagnostic"\} 1\.0$', worker_text, re.M)
    assert re.search(r"^dpp_charged_micros_total\{pack=\"diagnostic\"\} [1-9]", worker_text, re.M)
    api_text = Client().get("/metrics").content.decode()
    served = _served(worker_text) | _served(api_text)
    for source, expressions in (("rules", _rule_expressions()), ("dashboard", _dashboard_expressions())):
        assert expressions, source
        named = {_base(name) for expression in expressions for name in _METRIC.findall(expression)}
        assert named, source
        assert named <= served, (source, named - served)
