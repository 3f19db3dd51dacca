"""The SSRF-safe outbound HTTP client shared by the ``url`` pack and the webhooks (SPEC §5, §10): which addresses
may be reached (``addresses``), the strict URL parse (``target``), resolve-once-connect-to-the-checked-address
(``client``). Imports nothing of Django, so that the packs may use it."""

from dpp.http.outbound.client import (
    Budget,
    OutboundError,
    OutboundPolicy,
    Outgoing,
    Response,
    destinations_check,
    request,
)

__all__ = ["Budget", "OutboundError", "OutboundPolicy", "Outgoing", "Response", "destinations_check", "request"]
