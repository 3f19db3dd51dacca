"""What the pack tests run packs with (no Django, no database): a context and the URL policies."""

from __future__ import annotations

import time
from collections.abc import Callable
from ipaddress import ip_network

from packs.base import PackContext, UrlPolicy

# Tests reach their local servers on 127.0.0.1 only; every other address keeps production's rule.
LOOPBACK_ONE = (ip_network("127.0.0.1/32"),)
POLICY = UrlPolicy()  # production's: https only, public addresses only


def make_context(
    *,
    policy: UrlPolicy | None = None,
    max_cost_micros: int = 1_000_000_000,
    timeout_s: float = 10.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> PackContext:
    return PackContext(
        run_id="run-test",
        trace_id="trace-test",
        max_cost_micros=max_cost_micros,
        deadline=time.monotonic() + timeout_s,
        should_stop=should_stop,
        url_policy=policy or UrlPolicy(),
    )
