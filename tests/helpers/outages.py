"""Outages made for real: a result storage that cannot be read, a broker that refuses or never answers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from celery import current_app
from django.conf import settings
from django.test import override_settings

from tests.processes import free_port


@contextlib.contextmanager
def unreadable_storage(tmp_path: Path) -> Iterator[None]:
    """The results storage under a path whose parent is a regular file: every read fails with an OSError that
    is not "no such file" (as a lost mount, a permission change or an outage would)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    configured = cast(dict[str, Any], settings.STORAGES["results"])
    broken = {**configured, "OPTIONS": {**configured["OPTIONS"], "location": str(blocker / "results")}}
    with override_settings(STORAGES={**settings.STORAGES, "results": broken}):
        yield


@contextlib.contextmanager
def broker_down() -> Iterator[None]:
    """The app publishes to a port just freed, so every publish meets a real "connection refused"."""
    with publishing_to(f"redis://127.0.0.1:{free_port()}/0"):
        yield


@contextlib.contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """The app publishes to `url`. The write URL is the app's setting for publishing (CELERY_BROKER_URL in the
    environment would win over `broker_url`); the connection and producer pools are dropped so that it is used, and
    all is put back afterwards."""
    assert "CELERY_BROKER_WRITE_URL" not in os.environ  # it would win over the app's setting
    app = current_app._get_current_object()
    saved = (app.conf.get("broker_write_url"), app._pool, app.amqp._producer_pool)
    app.conf.broker_write_url = url
    app._pool = app.amqp._producer_pool = None
    try:
        yield
    finally:
        app.conf.broker_write_url, app._pool, app.amqp._producer_pool = saved
