"""The ``url`` pack's fetch: a GET through the platform's SSRF-safe outbound client (``dpp.http.outbound``),
following at most 5 checked redirects, bounded by the run's timebox and stopping on cancel.

Failures: ``FetchError`` (a ``PackError``) with ``FETCH_FAILED`` (network, TLS, protocol, refused or too many
redirects) or ``URL_BLOCKED``; ``TIMEBOX_EXCEEDED`` when the deadline passes during I/O; ``PackInterrupted`` on
cancel (both raised by ``context.check()``, which the client calls between every blocking step).
``FetchError.redirect_chain`` lists the hops followed before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dpp.http.outbound import OutboundError, Outgoing, Response, request
from packs.base import PackContext, PackError

MAX_REDIRECTS = 5
_HEADERS = {
    "User-Agent": "DPP-url-pack/1.0",
    "Accept": "*/*",
    "Accept-Encoding": "identity",  # the bytes read are the bytes billed: no compression
    "Connection": "close",
}

Fetched = Response


class FetchError(PackError):
    """A url pack failure that also carries the redirect hops followed before it."""

    def __init__(self, reason_code: str, detail: str, redirect_chain: Sequence[dict[str, Any]] = ()) -> None:
        chain = list(redirect_chain)
        if chain:
            hops = " -> ".join(f"{hop['url']} [{hop['status']}]" for hop in chain)
            detail = f"{detail} (after redirects: {hops})"
        super().__init__(reason_code, detail)
        self.redirect_chain = chain


def fetch(url: str, *, cap: int, context: PackContext) -> Fetched:
    """GET ``url``, following at most 5 checked redirects, keeping at most ``cap`` body bytes."""
    outgoing = Outgoing(method="GET", headers=_HEADERS, cap=cap, max_redirects=MAX_REDIRECTS)
    try:
        return request(url, outgoing, policy=context.url_policy, budget=context)
    except OutboundError as exc:
        raise FetchError(exc.reason_code, exc.detail, exc.redirect_chain) from None
