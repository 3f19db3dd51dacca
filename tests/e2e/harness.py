"""Stacks of real processes for the end-to-end and chaos tests: an API (gunicorn), celery workers, a broker.

Three stacks, one per way of running DPP (ARCHITECTURE.md "Two ways to run it"):
- `redis`: PostgreSQL (this test run's database), the Redis broker, results as local files;
- `sqs`: PostgreSQL, SQS and S3 both on a moto server that the test starts on 127.0.0.1;
- `embedded`: the defaults — SQLite, kombu's filesystem broker, local files — in a temp DPP_VAR_DIR of its own.
  The test process cannot see that database (its own is PostgreSQL), so it drives the stack over HTTP and
  through `manage.py` subprocesses only.

The children get tight timings (FAST_TIMINGS) so that a lease expires in 3 s and a stuck finalize is 2 s old;
tests that call `reaper.services.reconcile_once()` in this process use the `fast_reaper` fixture for the same.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from celery import current_app
from django.db.models import Sum

from billing.models import Account, LedgerEntry, LedgerTransaction
from reaper.services import reconcile_once
from runs.audit import full_audit
from runs.models import TERMINAL_STATUSES, Run
from tests.helpers.api import body
from tests.helpers.money import USD
from tests.helpers.personas import make_persona
from tests.processes import (
    Process,
    celery_worker,
    gunicorn,
    manage,
    moto_server,
    moto_sqs_s3_env,
    process_env,
)

FAST_TIMINGS = {
    "DPP_LEASE_S": "3",  # the heartbeat renews every second
    "DPP_FINALIZE_STALE_S": "2",
    "DPP_REDRIVE_AFTER_S": "2",
    "DPP_REAPER_INTERVAL_S": "1",
    "DPP_BROKER_POLLING_INTERVAL_MS": "100",
}
TERMINAL = frozenset(TERMINAL_STATUSES)
S3_BUCKET = "dpp-e2e-results"
REGION = "us-east-1"

# Every test of tests/e2e and tests/chaos: real processes see only committed data. (The flush after each such
# test drops the data-migration rows; tests/conftest.py puts them back before the next test.)
E2E = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fast_reaper(settings: Any) -> None:
    """This process's reaper with the children's timings."""
    settings.DPP_LEASE_S = 3
    settings.DPP_FINALIZE_STALE_S = 2
    settings.DPP_REDRIVE_AFTER_S = 2
    settings.DPP_REAPER_INTERVAL_S = 1


@dataclass
class TenantInfo:
    tenant_id: str
    api_key: str
    credit_micros: int


class Api:
    """An agent talking to the API over real HTTP."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def submit(self, pack_type: str, inputs: dict[str, Any], max_cost_usd: str, timebox_sec: int = 30) -> str:
        payload = body(pack_type, inputs, max_cost_usd=max_cost_usd, timebox_sec=timebox_sec)
        response = self.session.post(
            self.url("/v1/runs"), json=payload, headers={"Idempotency-Key": f"e2e-{uuid.uuid4().hex}"}, timeout=10
        )
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    def diagnostic(
        self, *, cost_usd: str = "0.0000", sleep_ms: int = 0, outcome: str = "succeed", max_cost_usd: str = "0.0500"
    ) -> str:
        inputs = {"cost_usd": cost_usd, "sleep_ms": sleep_ms, "outcome": outcome}
        return self.submit("diagnostic", inputs, max_cost_usd)

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.session.get(self.url(f"/v1/runs/{run_id}"), timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait(self, run_id: str, statuses: frozenset[str] = TERMINAL, timeout: float = 30) -> dict[str, Any]:
        """Poll the run until its status is one of `statuses`."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.run(run_id)
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {body['status']} after {timeout} s: {body}")
            time.sleep(0.1)

    def account(self) -> dict[str, Any]:
        response = self.session.get(self.url("/v1/account"), timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def usd_micros(text: str) -> int:
    """ "0.0123" → 12_300 (integer arithmetic, as the wire format is exactly 4 decimals)."""
    whole, _, fraction = text.partition(".")
    assert len(fraction) == 4, text
    return int(whole) * USD + int(fraction) * 100


@dataclass
class Stack:
    name: str
    base_url: str
    env: dict[str, str]
    embedded: bool = False
    s3_endpoint: str = ""
    workers: list[Process] = field(default_factory=list)

    @property
    def storage(self) -> str:
        return "s3" if self.s3_endpoint else "local"

    def tenant(self, credit_micros: int = 10 * USD) -> TenantInfo:
        """A tenant on the `unlimited` plan (it allows the diagnostic pack) with `credit_micros` available."""
        if not self.embedded:
            persona = make_persona(plan="unlimited", credit_micros=credit_micros, prefix="e2e")
            return TenantInfo(persona.tenant.pk, persona.api_key, credit_micros)
        tenant_id = f"e2e-{uuid.uuid4().hex[:12]}"
        created = json.loads(manage(["create_tenant", tenant_id, "--plan", "unlimited", "--json"], self.env).stdout)
        amount = f"{credit_micros // USD}.{credit_micros % USD // 100:04d}"
        manage(["topup", tenant_id, amount, "--reason", "e2e credit", "--json"], self.env)
        return TenantInfo(tenant_id, str(created["api_key"]), credit_micros)

    def api(self, tenant: TenantInfo) -> Api:
        return Api(self.base_url, tenant.api_key)

    @contextlib.contextmanager
    def worker(self, *, concurrency: int = 2, name: str = "worker", **env: str) -> Iterator[Process]:
        """A real `celery worker` of this stack (extra environment, e.g. a fault point, in `env`)."""
        with celery_worker({**self.env, **env}, concurrency=concurrency, name=f"{self.name}-{name}") as proc:
            self.workers.append(proc)
            yield proc

    def reconcile(self) -> dict[str, Any]:
        """One reaper pass with the fast timings: in this process, or via `manage.py reconcile` if embedded."""
        if self.embedded:
            # Exit status 1 when the pass left runs as they were (a broker or storage outage): the report says which.
            return dict(json.loads(manage(["reconcile", "--json"], self.env, check=False).stdout))
        return reconcile_once().as_dict()

    def audit(self) -> dict[str, Any]:
        """`audit_ledger` of SPEC §6 on this stack's database."""
        if self.embedded:
            done = manage(["audit_ledger", "--json"], self.env, check=False)
            return dict(json.loads(done.stdout))
        return full_audit().as_dict()

    def logs(self) -> str:
        return "\n".join(f"--- {proc.name} ---\n{proc.log()[-4000:]}" for proc in self.workers)


def fast_env(**overrides: str) -> dict[str, str]:
    return process_env(**FAST_TIMINGS, **overrides)


def purge_queues() -> None:
    """Drop what earlier tests left in this run's own queues (the runs' and the reaper's) on the test broker."""
    with current_app.connection_for_write() as conn, contextlib.suppress(Exception):
        for queue in current_app.conf.task_queues:
            conn.default_channel.queue_purge(queue.name)


@contextlib.contextmanager
def redis_stack(**overrides: str) -> Iterator[Stack]:
    """PostgreSQL + the Redis broker (this test run's own queue) + local result files."""
    env = fast_env(DPP_STORAGE="local", **overrides)
    assert env["CELERY_BROKER_URL"].startswith("redis://"), env["CELERY_BROKER_URL"]
    assert env["DPP_TASK_QUEUE"] == current_app.conf.task_default_queue  # the queues purge_queues() empties
    purge_queues()
    with gunicorn(env) as base_url:
        yield Stack("redis", base_url, env)


def s3_results_storage(endpoint: str) -> dict[str, Any]:
    """The `results` storage of settings.py for DPP_STORAGE=s3, pointed at moto (for this process's reaper)."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "region_name": REGION,
            "endpoint_url": endpoint,
            "access_key": "dummy",
            "secret_key": "dummy",
            "signature_version": "s3v4",
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": True,
            "object_parameters": {"ServerSideEncryption": "AES256", "ContentType": "application/json"},
        },
    }


@contextlib.contextmanager
def sqs_stack(**overrides: str) -> Iterator[Stack]:
    """PostgreSQL + SQS and S3 on a moto server of this test's own (kombu creates the queue)."""
    with moto_server() as endpoint:
        boto3.client(
            "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="dummy", aws_secret_access_key="dummy"
        ).create_bucket(Bucket=S3_BUCKET)
        env = fast_env(**{**moto_sqs_s3_env(endpoint, bucket=S3_BUCKET, region=REGION), **overrides})
        with gunicorn(env) as base_url:
            yield Stack("sqs", base_url, env, s3_endpoint=endpoint)


@contextlib.contextmanager
def embedded_stack(var_dir: Path, **overrides: str) -> Iterator[Stack]:
    """The embedded default: SQLite + the filesystem broker + local files, all under `var_dir`."""
    env = fast_env(
        DATABASE_URL=f"sqlite:///{var_dir / 'dpp.sqlite3'}",
        CELERY_BROKER_URL="filesystem://",
        DPP_VAR_DIR=str(var_dir),
        DPP_LOCAL_STORAGE_DIR=str(var_dir / "results"),
        DPP_BROKER_DIR=str(var_dir / "broker"),
        DPP_STORAGE="local",
        REDIS_URL="",
        **overrides,
    )
    manage(["migrate", "--noinput", "-v0"], env, timeout=300)
    with gunicorn(env) as base_url:
        yield Stack("embedded", base_url, env, embedded=True)


# --- assertions shared by the e2e and chaos tests --------------------------------------------------------


def reconcile_until(stack: Stack, done: Callable[[], bool], timeout: float = 20) -> dict[str, int]:
    """Reaper passes (every 0.3 s) until `done()`; the counts of what the passes did, summed."""
    totals: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not settled by the reaper within {timeout} s; totals {totals}\n{stack.logs()}")
        report = stack.reconcile()
        for key, value in report.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
        time.sleep(0.3)
    return totals


def settles_of(run_id: str) -> int:
    return LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.SETTLE, run_id=run_id).count()


def assert_money_balanced(stack: Stack, tenant: TenantInfo, expected_charged_micros: int) -> None:
    """The ledger audits clean; the tenant holds nothing; available + charged = credit, to the micro."""
    report = stack.audit()
    assert report["ok"] is True, report["violations"]
    account = stack.api(tenant).account()
    available, held = usd_micros(account["available_usd"]), usd_micros(account["held_usd"])
    assert held == 0, account
    assert available + expected_charged_micros == tenant.credit_micros, account
    if stack.embedded:
        return
    revenue = LedgerEntry.objects.filter(
        transaction__tenant_id=tenant.tenant_id, account__kind=Account.Kind.REVENUE
    ).aggregate(total=Sum("amount_micros"))["total"]
    assert (revenue or 0) == expected_charged_micros
    charged = Run.objects.filter(tenant_id=tenant.tenant_id).aggregate(total=Sum("charged_micros"))["total"] or 0
    assert charged == expected_charged_micros
