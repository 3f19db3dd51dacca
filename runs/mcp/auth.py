"""Who is calling: the /mcp view authenticates the bearer key exactly as /v1 does (DRF, billing's key check, the
plan) and hands the SDK's handlers a `Caller` through the WSGI environ (the ASGI scope's `wsgi_environ`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework.request import Request

from billing.models import Plan
from dpp import key_limits
from dpp.http.errors import ApplicationError
from dpp.models import ApiKey, Tenant
from runs.services import key_chain

ENVIRON_KEY = "dpp.mcp.caller"


@dataclass(frozen=True)
class Caller:
    tenant: Tenant
    plan: Plan
    key: ApiKey
    trace_id: str
    request: Request  # for absolute URLs in run bodies, as /v1 builds them
    refusal: ApplicationError | None = None  # a rate limit a tools/call must answer as a tool error


def caller_of(ctx: Any) -> Caller:
    """The caller of the request a handler serves (set by runs.mcp.views before the transport saw it)."""
    caller = ctx.request.scope["wsgi_environ"][ENVIRON_KEY]
    assert isinstance(caller, Caller)  # noqa: S101 - every request reaches the transport through the view
    return caller


def packs_allowed(caller: Caller, pack_types: list[str]) -> list[str]:
    """The packs this key may run: its plan's, narrowed by the tightest `allowed_packs` along its chain (SPEC §8)."""
    allowed = [pack_type for pack_type in pack_types if caller.plan.allows(pack_type)]
    narrowed = key_limits.allowed_packs(key_chain(caller.key))
    return allowed if narrowed is None else [pack_type for pack_type in allowed if pack_type in narrowed]
