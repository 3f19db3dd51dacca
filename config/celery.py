"""The Celery app: `celery -A config worker` and `celery -A config beat`.

Delivery is at-least-once (acks late, re-queued when a worker dies): a duplicate delivery is harmless because
leasing a run is a compare-and-set. Results are ignored: the database holds every outcome.
The broker comes from CELERY_BROKER_URL: `sqs://` (production), `redis://`, or `filesystem://` (embedded mode).
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_prerun, worker_init
from django.db import close_old_connections
from kombu.entity import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("dpp")
SQS_TRANSPORT = "config.adapters.kombu_sqs:Transport"


def broker_url(url: str) -> str:
    """The URL handed to kombu. A bare `filesystem://` names no host, so kombu logs "No hostname was supplied.
    Reverting to default 'localhost'" at every connection (four times at `make run`, once more in the API on its
    first submit), as if a network broker were missing; the filesystem transport ignores the host: name it."""
    return "filesystem://localhost/" if url in ("filesystem://", "filesystem:///") else url


def broker_transport(url: str) -> str | None:
    """kombu's SQS transport with a polling loop that survives an SQS outage for `sqs://`
    (config/adapters/kombu_sqs.py); else the one the URL names (None)."""
    if url.startswith("sqs://"):
        return SQS_TRANSPORT
    return None


# A broker that accepts connections and never answers must not hold a request (the publish after a submit's
# commit, /readyz) or a worker forever: every call to it is bounded. Redis answers in well under a millisecond and
# replies to the workers' BRPOP within its 1 s timeout, so 3 s is only reached by a broker that does not answer.
BROKER_SOCKET_TIMEOUT_S = 3
# botocore: one attempt per call (its own retries would multiply the publish's retry policy, runs/dispatch.py).
SQS_CLIENT_CONFIG = {"connect_timeout": 3, "read_timeout": 5, "retries": {"mode": "standard", "total_max_attempts": 1}}


def broker_transport_options(settings: Any) -> dict[str, Any]:
    """Transport options for the configured broker (SPEC §7; measured figures in docs/decisions.md)."""
    url: str = settings.CELERY_BROKER_URL
    # Longest run (90 s timebox) plus finalize and slack: SQS must not hand a running task to another worker
    # while the first still holds the lease. If it does anyway, the lease CAS makes the copy a no-op.
    visibility_timeout = 90 + settings.DPP_LEASE_S + 180
    if url.startswith("sqs://"):
        options: dict[str, Any] = {
            "region": settings.DPP_SQS_REGION,
            "is_secure": settings.DPP_SQS_IS_SECURE,
            "visibility_timeout": visibility_timeout,
            "polling_interval": settings.DPP_BROKER_POLLING_INTERVAL,
            "wait_time_seconds": 1,
            "client-config": SQS_CLIENT_CONFIG,  # botocore's defaults: 60 s timeouts, retried
        }
        if settings.DPP_SQS_QUEUE_PREFIX:
            options["queue_name_prefix"] = settings.DPP_SQS_QUEUE_PREFIX
        return options
    if url.startswith(("redis://", "rediss://")):
        return {
            "visibility_timeout": visibility_timeout,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
        }
    if url.startswith("filesystem://"):
        folders = {name: settings.DPP_BROKER_DIR / name for name in ("queue", "control", "tmp")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        # kombu moves a message to the temp dir before reading it: it must be on the same filesystem for
        # the move to be an atomic rename (two workers must never both take one message).
        tempfile.tempdir = str(folders["tmp"])
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "control_folder": str(folders["control"]),
            "polling_interval": settings.DPP_BROKER_POLLING_INTERVAL,
        }
    return {}


def reaper_queue(settings: Any) -> str:
    """The queue of the reaper's tasks: behind a backlog of runs a pass would wait, then expire unrun (found from
    outside: crashed runs held their money for minutes while the queue drained). Workers consume both queues."""
    return f"{settings.DPP_TASK_QUEUE}-reaper"


def task_queues(settings: Any) -> list[Queue]:
    """The runs' queue, the reaper's and the webhooks' (DPP_WEBHOOK_QUEUE: a receiver that hangs for its 10 s must
    never hold a run's worker), each as Celery declares its default queue (a direct exchange of its name)."""
    return [
        Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
        for name in (settings.DPP_TASK_QUEUE, reaper_queue(settings), settings.DPP_WEBHOOK_QUEUE)
    ]


def audit_schedule(seconds: int) -> crontab:
    """The ledger audit on the wall clock (hourly: at minute 0), not every `seconds` from beat's start: beat keeps
    no count across a restart of a timedelta, so a beat restarted more often than the interval never audited."""
    if seconds % 3600 == 0:
        return crontab(minute=0, hour=f"*/{seconds // 3600}" if seconds > 3600 else "*")
    if seconds % 60 == 0 and 3600 % seconds == 0:
        return crontab(minute=f"*/{seconds // 60}")
    raise ValueError(f"DPP_LEDGER_AUDIT_INTERVAL_S={seconds}: whole hours, or minutes that divide an hour")


def beat_schedule(settings: Any) -> dict[str, dict[str, Any]]:
    """A reaper pass every DPP_REAPER_INTERVAL_S; the whole ledger audit every DPP_LEDGER_AUDIT_INTERVAL_S (0: off),
    on the clock (audit_schedule); the activity page's ended days hourly at minute 10 (runs.activity.close_days; a
    day is closed an hour after its end, so at 01:10 UTC). Each expires after its interval: a backlog of passes is
    not worth running twice."""
    reaper_s = settings.DPP_REAPER_INTERVAL_S
    schedule: dict[str, dict[str, Any]] = {
        "reaper-reconcile": {
            "task": "dpp.reaper.reconcile",
            "schedule": timedelta(seconds=reaper_s),
            "options": {"expires": reaper_s},
        },
        "close-activity-days": {
            "task": "dpp.reaper.close_activity_days",
            "schedule": crontab(minute=10),
            "options": {"expires": 3600},
        },
    }
    audit_s = settings.DPP_LEDGER_AUDIT_INTERVAL_S
    if audit_s:
        schedule["ledger-audit"] = {
            "task": "dpp.reaper.audit_ledger",
            "schedule": audit_schedule(audit_s),
            "options": {"expires": audit_s},
        }
    return schedule


def configure(settings: Any) -> None:
    # The filesystem transport is slow with prefetch 1 (~1.5 tasks/s, measured). A busy worker still holds only
    # the one task its pool can start; a crash loses that task, which the reaper re-drives (embedded mode only).
    prefetch = 8 if settings.CELERY_BROKER_URL.startswith("filesystem://") else 1
    app.conf.update(
        broker_url=broker_url(settings.CELERY_BROKER_URL),
        # Celery prefers $CELERY_BROKER_URL to broker_url as configured here; read and write URLs come first.
        broker_read_url=broker_url(settings.CELERY_BROKER_URL),
        broker_write_url=broker_url(settings.CELERY_BROKER_URL),
        broker_transport=broker_transport(settings.CELERY_BROKER_URL),
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.DPP_TASK_QUEUE,
        task_queues=task_queues(settings),  # what `celery worker` consumes unless -Q names others
        task_routes={
            "dpp.reaper.*": {"queue": reaper_queue(settings)},
            "dpp.webhooks.*": {"queue": settings.DPP_WEBHOOK_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=prefetch,
        worker_hijack_root_logger=False,
        # Celery's Django fix-up closes the DB connection around every task unless told to reuse it: a new
        # PostgreSQL session per run halved throughput (measured: 59 → 109 runs/s on Redis). Broken connections
        # are still replaced before every task (`_usable_database_connection` below).
        CELERY_DB_REUSE_MAX=100,
        worker_send_task_events=False,
        task_send_sent_event=False,
        timezone="UTC",
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str(settings.VAR_DIR / "celerybeat-schedule"),
    )


def _usable_database_connection(sender: Any = None, **kwargs: Any) -> None:
    """Before every task of every worker, what Django does before every request: drop a connection that broke or
    outlived CONN_MAX_AGE, and have the next query check the connection first (CONN_HEALTH_CHECKS). Found from
    outside: with CELERY_DB_REUSE_MAX the fix-up closes connections only every 100 tasks, so after a PostgreSQL
    restart every reaper pass failed on the dead connection for ~100 passes (50 minutes at 30 s). Not for an eager
    call (`apply`): it runs inside its caller's transaction, as the fix-up also knows."""
    if getattr(sender.request, "is_eager", False):
        return
    close_old_connections()


# Connected by call, not by decorator: Celery's signals are untyped, and a decorator would untype the handler.
task_prerun.connect(_usable_database_connection, dispatch_uid="dpp.usable_database_connection")


def worker_metrics_registry() -> Any:
    """What the worker's metrics port serves: with PROMETHEUS_MULTIPROC_DIR, the sum of every process writing to
    that folder (the prefork pool's children count the runs), else this process's own registry (a solo pool)."""
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def _serve_worker_metrics(**_: Any) -> None:
    """`celery worker` (its main process, before the pool forks) serves /metrics on DPP_WORKER_METRICS_PORT: the
    runs' counters are counted where runs end, in the workers, which the API's /metrics does not see unless both
    share a PROMETHEUS_MULTIPROC_DIR (docs/operations.md §5)."""
    from django.conf import settings
    from prometheus_client import start_http_server

    if settings.DPP_WORKER_METRICS_PORT:
        start_http_server(settings.DPP_WORKER_METRICS_PORT, registry=worker_metrics_registry())


worker_init.connect(_serve_worker_metrics, dispatch_uid="dpp.serve_worker_metrics")


def _setup() -> None:
    from django.conf import settings

    configure(settings)
    app.autodiscover_tasks()


_setup()
