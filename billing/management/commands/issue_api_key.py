from datetime import UTC, datetime
from typing import Any

from django.utils.dateparse import parse_datetime

from billing.selectors import plan_get
from dpp.management.base import Arg, TenantCommand, fits
from dpp.models import ApiKey, SpendWindow, Tenant
from dpp.money import parse_max_cost, parse_usd
from dpp.services import KeyLimits, api_key_issue


def _instant(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"--expires {value!r}: give an ISO 8601 date-time with Z or an offset")
    return parsed.astimezone(UTC)


class Command(TenantCommand):
    """Issue a new API key for a tenant, optionally below another key and with limits (SPEC §8); prints it once."""

    arguments = (
        Arg("--label", default="", type=fits(ApiKey, "label")),
        Arg("--test", action="store_true", help="a dpp_test_ key instead of dpp_live_"),
        Arg("--parent", help="the 16-character prefix of the key to put it below"),
        Arg("--spend-limit", help="USD the key's runs may commit per window, e.g. 5.0000"),
        Arg("--window", choices=SpendWindow.values, help="the spend limit's window (UTC)"),
        Arg("--max-cost-per-run", help="the largest max_cost_usd the key may submit, e.g. 0.5000"),
        Arg("--packs", help="comma-separated pack types the key may run (default: the plan's)"),
        Arg("--expires", help="when the key stops working (ISO 8601, e.g. 2027-01-01T00:00:00Z)"),
        Arg("--can-manage-keys", action="store_true", help="the key may create keys below it"),
    )

    def _limits(self, options: dict[str, Any]) -> KeyLimits:
        packs = options["packs"]
        return KeyLimits(
            spend_limit_micros=parse_usd(options["spend_limit"], field="--spend-limit")
            if options["spend_limit"]
            else None,
            spend_window=options["window"] or "",
            max_cost_per_run_micros=parse_max_cost(options["max_cost_per_run"], field="--max-cost-per-run")
            if options["max_cost_per_run"]
            else None,
            allowed_packs=tuple(p.strip() for p in packs.split(",") if p.strip()) if packs is not None else None,
            expires_at=_instant(options["expires"]) if options["expires"] else None,
        )

    def run_for(self, tenant: Tenant, **options: Any) -> None:
        parent = None
        if options["parent"]:
            parent = ApiKey.objects.filter(tenant=tenant, prefix=options["parent"], revoked_at__isnull=True).first()
            if parent is None:
                self.fail(f"no active key {options['parent']!r} of tenant {tenant.pk}")
        try:
            limits = self._limits(options)
        except ValueError as exc:
            self.fail(str(exc))
        plan = plan_get(tenant_id=tenant.pk)
        outside = plan.packs_outside(limits.allowed_packs)
        if outside:
            self.fail(f"--packs: {', '.join(outside)} not in plan {plan.code!r}")
        issued = api_key_issue(
            tenant=tenant,
            label=options["label"],
            environment="test" if options["test"] else "live",
            parent=parent,
            limits=limits,
            can_manage_keys=options["can_manage_keys"],
        )
        self.emit(
            {
                "tenant_id": tenant.pk,
                "api_key": issued.secret,
                "plan": plan.code,
                "key_prefix": issued.api_key.prefix,
                "parent_prefix": parent.prefix if parent else None,
            },
            f"API key for {tenant.pk} (shown once): {issued.secret}",
        )
