"""API-key authentication that also reads the tenant's open plan, in the same single query.

dpp authenticates without knowing of plans; billing adds the plan's id to the lookup so that rate limits and
the submit's plan checks cost no query of their own (plan definitions are cached: see `plan_by_id`).
"""

from __future__ import annotations

from billing import sql
from dpp.http.auth import ApiKeyAuthentication


class PlanApiKeyAuthentication(ApiKeyAuthentication):
    extra_columns = (("open_plan_id", sql.OPEN_PLAN_ID_SQL),)
