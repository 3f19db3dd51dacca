"""Where webhooks may be delivered: the url pack's rules from settings (SPEC §10), and a 10 s deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings

from dpp.http.outbound import OutboundError, OutboundPolicy

ATTEMPT_TIMEOUT_S = 10.0
RESPONSE_CAP_BYTES = 1024

# host, port -> addresses; None: the system's resolver. Tests put a resolver they control here (a DNS answer that
# changes after registration), as the url pack's tests do through its policy.
RESOLVER: Callable[[str, int], list[str]] | None = None


def outbound_policy() -> OutboundPolicy:
    return OutboundPolicy(
        allow_http=settings.DPP_URL_ALLOW_HTTP,
        extra_allowed_networks=settings.DPP_URL_EXTRA_ALLOWED_NETWORKS,
        resolver=RESOLVER,
        ca_file=settings.DPP_URL_CA_FILE,
    )


class Deadline:
    """The outbound client's budget for one attempt: FETCH_FAILED once ATTEMPT_TIMEOUT_S have passed."""

    def __init__(self, seconds: float = ATTEMPT_TIMEOUT_S) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining_s(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def check(self) -> None:
        if time.monotonic() >= self.at:
            raise OutboundError("FETCH_FAILED", f"no answer within {self.seconds:g} s")
