"""API-key authentication that also reads the tenant's open plan, in the same single query.

dpp authenticates without knowing of plans; billing adds the plan's id to the lookup so that rate limits and
the submit's plan checks cost no query of their own (plan definitions are cached: see `plan_by_id`).
"""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery

from billing.models import TenantPlan
from dpp.auth import ApiKeyAuthentication
from dpp.models import ApiKey


class PlanApiKeyAuthentication(ApiKeyAuthentication):
    def queryset(self) -> QuerySet[ApiKey]:
        open_plan = TenantPlan.objects.filter(tenant_id=OuterRef("tenant_id"), ended_at__isnull=True).order_by()
        return super().queryset().annotate(open_plan_id=Subquery(open_plan.values("plan_id")[:1]))
