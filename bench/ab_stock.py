"""gunicorn config file (`-c`) for `bench/submit.py --ab`: the stock side of one library override.

`DPP_BENCH_STOCK` names the override to replace by what the library does on its own; empty, nothing changes (the
override side gets this file too, so both sides start alike). Applied in each worker after the application is
loaded and before its first request. The overrides measured and removed (a gunicorn worker class, kombu's Redis
channel, an INSERT helper) had their stock sides here too: docs/BENCHMARKS.md, "Library overrides".
"""

from __future__ import annotations

import os
from typing import Any

STOCK = os.environ.get("DPP_BENCH_STOCK", "")


def _stock_postgresql_backend() -> str:
    from django.conf import settings
    from django.db import connections

    settings.DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
    return type(connections["default"]).__module__


def _stock_hot() -> str:
    """The ORM's public path instead of config.adapters.django_hot's for a run's GET: `Model.objects.raw()` of the
    same SELECT, on Django's own cursor (client-side binding, not prepared)."""
    from billing.models import Account
    from runs import selectors, sql
    from runs.models import Run

    raw_sql = sql.RUN_GET_SQL.replace(" FROM runs_run r", " AS available_micros FROM runs_run r")

    def run_get(*, tenant: Any, run_id: Any, api_key: Any = None) -> Any:
        available_id = Account.tenant_account_id(tenant.pk, Account.Kind.AVAILABLE)
        return next(iter(Run.objects.raw(raw_sql, [available_id, tenant.pk, run_id])), None)

    selectors.run_get = run_get
    return "Model.objects.raw()"


STOCK_SIDES = {
    "postgresql_backend": _stock_postgresql_backend,
    "hot": _stock_hot,
}


def post_worker_init(worker: Any) -> None:
    if STOCK in STOCK_SIDES:
        worker.log.info("bench: stock %s: %s", STOCK, STOCK_SIDES[STOCK]())
