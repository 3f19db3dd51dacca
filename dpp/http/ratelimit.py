"""Rate limits in Redis: GCRA in one Lua script, atomic, one round trip, Redis's clock for every API process.

Headers follow the IETF draft (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "reads";q=300;w=60`
and `RateLimit: "reads";r=299;t=1`. Without `REDIS_URL` (the embedded mode) limits are off: no header is sent,
since a quota that never goes down would be a promise not kept (`/readyz` warns instead). If Redis is configured
but unreachable, requests are let through (money never lives in Redis), with a warning in the log and a metric.

A tenant's requests count against the tenant's plan (`RateLimitedViewMixin`). Every other /v1 answer — no key or
a bad one, a path that does not exist, the OpenAPI document — counts against the client's address under the
`anonymous` policy (`anonymous_limited`), so that every /v1 response carries the headers and key guessing is
bounded too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from dpp.db.redis import get_redis
from dpp.http.errors import ApplicationError
from dpp.http.problems import problem_response
from dpp.observability import RATE_LIMIT_FAIL_OPEN

logger = logging.getLogger("dpp.http.ratelimit")

WINDOW_S = 60

# KEYS[1] = bucket key; ARGV[1] = emission interval (µs), ARGV[2] = limit (burst).
# Returns {allowed, remaining, retry_after_us, reset_us}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
local remaining = math.floor((now - allow_at) / interval)
return {1, remaining, 0, new_tat - now}
"""


@dataclass(frozen=True)
class RateDecision:
    policy: str
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={WINDOW_S}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset_s}',
        }


def bucket_key(policy: str, identity: str) -> str:
    return f"dpp:rl:{policy}:{identity}"


_script: Any = None
_last_warning = 0.0


def _warn_fail_open(reason: str) -> None:
    global _last_warning  # noqa: PLW0603 - one warning per 10 s per process, not one per request
    RATE_LIMIT_FAIL_OPEN.inc()
    now = time.monotonic()
    if now - _last_warning > 10:
        _last_warning = now
        logger.warning("rate limiting fails open: %s", reason)


def check(*, policy: str, identity: str, limit_per_min: int) -> RateDecision | None:
    """Count one request of `identity` against `limit_per_min`; None when rate limits are off; never raises."""
    global _script  # noqa: PLW0603 - the registered script is cached per process
    client = get_redis()
    if client is None:
        return None
    interval_us = WINDOW_S * 1_000_000 // max(limit_per_min, 1)
    try:
        if _script is None:
            _script = client.register_script(_GCRA)
        allowed, remaining, retry_us, reset_us = _script(
            keys=[bucket_key(policy, identity)], args=[interval_us, limit_per_min], client=client
        )
    except redis.RedisError as exc:
        _warn_fail_open(type(exc).__name__)
        return RateDecision(policy, limit_per_min, limit_per_min, WINDOW_S, 0, allowed=True)
    if not allowed:
        # Refused: Retry-After and the item's `t` are one number, the whole seconds (rounded up, at least 1)
        # until this policy admits a request again (SPEC §4); "until the bucket is full" would tell a client
        # to wait up to a whole window for a request it could make in one interval.
        wait_s = max(1, -(-int(retry_us) // 1_000_000))
        return RateDecision(policy, limit_per_min, 0, wait_s, wait_s, allowed=False)
    return RateDecision(policy, limit_per_min, int(remaining), -(-int(reset_us) // 1_000_000), 0, allowed=True)


def _rate_limited(decision: RateDecision) -> ApplicationError:
    return ApplicationError(
        "RATE_LIMITED",
        f"More than {decision.limit} {decision.policy} per minute; retry in {decision.retry_after_s} s.",
        headers={**decision.headers(), "Retry-After": str(decision.retry_after_s)},
    )


ANONYMOUS_POLICY = "anonymous"
_address_of = BaseThrottle()  # DRF's reading of the client's address: REMOTE_ADDR, or X-Forwarded-For per NUM_PROXIES


def client_address(request: HttpRequest) -> str:
    """The client's address as the rate limits see it (`DPP_NUM_PROXIES`); "" when there is none."""
    return _address_of.get_ident(cast(Request, request)) or ""  # it reads only .headers and .META


def anonymous_limited(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A /v1 answer that no tenant was counted for, counted against the client's address.

    Such answers (401, an unknown path, the OpenAPI document, a body too large) changed nothing, so over the
    limit the answer is replaced by the 429. Never replaced: a 5xx (the client must see the outage) and a CORS
    preflight (OPTIONS), which a browser sends before the request that is itself counted; refusing it would
    make a browser's authenticated calls fail on the address's anonymous bucket.
    """
    decision = check(
        policy=ANONYMOUS_POLICY,
        identity=client_address(request) or "unknown",
        limit_per_min=settings.DPP_ANONYMOUS_RATE_LIMIT,
    )
    if decision is None:
        return response
    if not decision.allowed and response.status_code < 500 and request.method != "OPTIONS":
        refused = problem_response(_rate_limited(decision), request)
        for name, value in response.items():  # CORS, so that a browser may read the 429
            if name.lower().startswith("access-control-") or name.lower() == "vary":
                refused[name] = value
        return refused
    for name, value in decision.headers().items():
        response[name] = value
    return response


class RateLimitedViewMixin:
    """For DRF views: counts each authenticated request and adds the RateLimit headers to the response.

    A subclass says which policy applies (`rate_limit_policy`) and how many requests per minute the
    tenant may make (`rate_limit_for`); dpp itself knows nothing of plans.
    """

    rate_limit_policy = "reads"

    def rate_limit_policy_for(self, request: Request) -> str:
        return self.rate_limit_policy

    def rate_limit_for(self, request: Request, policy: str) -> int:
        raise NotImplementedError

    def check_throttles(self, request: Request) -> None:
        tenant = request.user
        policy = self.rate_limit_policy_for(request)
        decision = check(policy=policy, identity=str(tenant.pk), limit_per_min=self.rate_limit_for(request, policy))
        request._dpp_rate_decision = decision  # type: ignore[attr-defined]
        if decision is not None and not decision.allowed:
            raise _rate_limited(decision)

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        decision: RateDecision | None = getattr(request, "_dpp_rate_decision", None)
        if decision is not None:
            for name, value in decision.headers().items():
                response.setdefault(name, value)
        return response
