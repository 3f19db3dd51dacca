"""Content negotiation that never refuses: an `Accept` (or `?format=`) a view cannot satisfy gets its default.

RFC 9110 §12.5.1 lets a server disregard `Accept` and answer in its default format. The API speaks JSON only,
and an agent that sends `Accept: application/problem+json` (or `text/plain`, or its library's default) must not
be refused for it; errors are `application/problem+json` whatever the client asked for.
"""

from __future__ import annotations

from collections.abc import Iterable

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class FallbackContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, except that no match means the view's first renderer (of the `?format=` ones, if any)."""

    def filter_renderers(self, renderers: Iterable[BaseRenderer], format: str) -> list[BaseRenderer]:  # noqa: A002
        # DRF answers 404 to a `?format=` that no renderer has: a run that exists would read as one that does not.
        candidates = list(renderers)
        return [renderer for renderer in candidates if renderer.format == format] or candidates

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        candidates = list(renderers)
        try:
            renderer, media_type = super().select_renderer(request, candidates, format_suffix)
        except NotAcceptable as exc:
            # The renderers left after `?format=`, so `?format=yaml` with an odd Accept still gets YAML.
            renderer = (exc.available_renderers or candidates)[0]
            media_type = renderer.media_type
        return renderer, str(media_type)
