import json
from typing import Any

from rest_framework.utils.encoders import JSONEncoder

from billing.apis import StatementApi
from billing.selectors import statement_get
from dpp.http.renderers import csv_text
from dpp.management.base import Arg, TenantCommand
from dpp.models import Tenant


class Command(TenantCommand):
    """A tenant's statement of a UTC calendar month (SPEC §13): what GET /v1/statements/{month} shows."""

    arguments = (
        Arg("month", help="YYYY-MM"),
        Arg("--csv", action="store_true", help="the lines as CSV, as the API's text/csv"),
    )

    def run_for(self, tenant: Tenant, **options: Any) -> None:
        statement = statement_get(tenant_id=tenant.pk, month=options["month"])
        if options["csv"]:
            self.stdout.write(csv_text(StatementApi.csv_columns, statement["lines"]), ending="")
        elif self.as_json:
            # DRF's encoder, as the API renders it (Django's would cut created_at to milliseconds).
            self.stdout.write(json.dumps(statement, cls=JSONEncoder))
        else:
            self.stdout.write(_text(statement))


def _text(statement: dict[str, Any]) -> str:
    """The statement for a person: its totals, then one line per ledger item with the balance after it."""
    s = statement
    head = [
        f"statement of {s['tenant_id']} for {s['month']} (USD)",
        f"opening      available {s['opening_available_usd']}  held {s['opening_held_usd']}",
        f"top-ups {s['topups_usd']}  charges {s['charges_usd']}  adjustments {s['adjustments_usd']}  runs {s['runs']}",
        f"closing      available {s['closing_available_usd']}  held {s['closing_held_usd']}",
        "",
    ]
    lines = [
        f"{line['created_at']:%Y-%m-%d %H:%M:%S}  #{line['transaction_id']:<8} {line['kind']:<10} "
        f"{line['available_delta_usd']:>12} {line['held_delta_usd']:>12} -> {line['available_usd']:>12}  "
        f"{line['reason'] or line['run_id'] or ''}"
        for line in statement["lines"]
    ]
    return "\n".join(head + (lines or ["(no ledger items this month)"]))
