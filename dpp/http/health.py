"""Liveness, readiness and metrics (SPEC §4): for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from celery import current_app
from django.core.files.storage import FileSystemStorage, storages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from dpp.db import sql
from dpp.db.redis import get_redis
from dpp.observability import DB_COLLECTORS
from dpp.storage import bucket_exists

logger = logging.getLogger("dpp.readyz")

UP, DOWN, DISABLED = "up", "down", "disabled"


@require_safe
def health(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers; touches nothing."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    sql.ping()
    return UP


def _check_redis() -> str:
    client = get_redis()
    if client is None:
        return DISABLED
    client.ping()
    return UP


def _check_broker() -> str:
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        conn.default_channel  # noqa: B018 - opening a channel is what proves SQS/Redis answer
    return UP


# One filesystem block: what the smallest envelope needs. A folder that cannot take it (full, read-only, over
# quota) cannot take a result either; found from outside: on a full disk runs ended FINALIZE_ABORTED while the
# storage was reported up (os.access() only asks for permission, not for space).
PROBE_BYTES = 4096


def _local_folder_takes_a_write(location: Path) -> bool:
    """Write PROBE_BYTES to a file of its own in `location`, flush them to the disk (a full disk may only say so
    then), and remove it."""
    probe = location / f".readyz-probe-{uuid.uuid4().hex}"  # one per request: readiness checks may overlap
    try:
        location.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:  # unbuffered: a refused write raises here, not in a close that would leave the file behind
            written = os.write(descriptor, b"\0" * PROBE_BYTES)  # short of PROBE_BYTES: the last bytes left
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as exc:
        logger.error("readyz: the results folder %s takes no write: %s", location, exc)  # noqa: TRY400 - no stack
        return False
    finally:
        probe.unlink(missing_ok=True)
    if written < PROBE_BYTES:
        logger.error("readyz: the results folder %s took %d of %d bytes", location, written, PROBE_BYTES)
        return False
    return True


def _check_storage() -> str:
    storage = storages["results"]
    if isinstance(storage, FileSystemStorage):
        return UP if _local_folder_takes_a_write(Path(storage.location)) else DOWN
    # The bucket must exist (S3 says 404 for any key of a bucket that does not), and a HEAD of a key that does not
    # exist must be a 404 (exists() raises on a 403: without s3:ListBucket S3 hides what is missing, and the reaper
    # could not tell an envelope never uploaded from one it may not see; docs/decisions.md).
    if not bucket_exists(storage):
        logger.error("readyz: the results bucket does not exist")
        return DOWN
    storage.exists("readyz-probe")
    return UP


CHECKS: dict[str, Callable[[], str]] = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
    "storage": _check_storage,
}


@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: each dependency up/down; 503 when one the configuration needs is down."""
    services: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            services[name] = check()
        except Exception as exc:
            logger.warning("readiness: %s is down: %s", name, type(exc).__name__)
            services[name] = DOWN
    ready = DOWN not in services.values()
    body: dict[str, object] = {"status": "ready" if ready else "not_ready", "services": services}
    if services["redis"] == DISABLED:
        body["warnings"] = ["rate limiting is off: REDIS_URL is not set"]
    response = JsonResponse(body, status=200 if ready else 503)
    if not ready:
        response["Retry-After"] = "5"
    return response


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; aggregates all processes when PROMETHEUS_MULTIPROC_DIR is set (gunicorn)."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in DB_COLLECTORS:
            registry.register(collector)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
