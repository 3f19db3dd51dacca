"""Every hand-written SQL statement of runs, each with the one reason it is not the ORM's (the figures they buy:
docs/BENCHMARKS.md). They run on the hot cursor (config.adapters.django_hot): prepared on PostgreSQL."""

from __future__ import annotations

import uuid
from typing import cast

from django.db import connection

from billing.models import Account
from config.adapters.django_hot import RowReader, hot_cursor
from runs.models import Run

# The columns a run's answer shows (not its inputs, up to 256 KiB of JSON); the others load on access.
SHOWN_FIELDS = (
    "id",
    "tenant",
    "pack_type",
    "profile_version",
    "status",
    "money_state",
    "reserved_micros",
    "minimum_fee_micros",
    "charged_micros",
    "reason_code",
    "error_detail",
    "result_key",
    "result_sha256",
    "result_bytes",
    "trace_id",
    "timebox_sec",
    "created_at",
    "updated_at",
    "completed_at",
    "cancel_requested_at",
)
_SHOWN = RowReader(Run, SHOWN_FIELDS, extras=("available_micros",))
# Why: every poll runs it; prepared and read into a Run without the ORM compiling the query each time.
RUN_GET_SQL = (
    f"SELECT {_SHOWN.columns('r')},"  # noqa: S608 - a constant list of column names
    " (SELECT a.balance_micros FROM billing_account a WHERE a.id = %s)"
    " FROM runs_run r WHERE r.tenant_id = %s AND r.id = %s"
)


def run_with_available(*, tenant_id: str, run_id: uuid.UUID) -> Run | None:
    """The tenant's run with its tenant's available balance as `available_micros`, or None."""
    available_id = Account.tenant_account_id(tenant_id, Account.Kind.AVAILABLE)
    with hot_cursor() as cursor:
        cursor.execute(RUN_GET_SQL, [available_id, tenant_id, Run._meta.pk.get_db_prep_value(run_id, connection)])
        return cast(Run | None, _SHOWN.instance(cursor.fetchone()))
