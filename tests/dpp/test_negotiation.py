"""dpp.http.negotiation: DRF's choice where something matches, the view's default where nothing does."""

from __future__ import annotations

import pytest
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from dpp.http.negotiation import FallbackContentNegotiation


class YamlRenderer(BaseRenderer):
    media_type = "application/yaml"
    format = "yaml"


RENDERERS = [JSONRenderer(), YamlRenderer()]


def _select(accept: str | None, query: str = "") -> tuple[str, str]:
    factory = APIRequestFactory()
    django_request = factory.get(f"/v1/runs{query}", HTTP_ACCEPT=accept) if accept else factory.get(f"/v1/runs{query}")
    request = Request(django_request)
    renderer, media_type = FallbackContentNegotiation().select_renderer(request, RENDERERS)
    return renderer.format, media_type


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        (None, "", ("json", "application/json")),
        ("application/yaml", "", ("yaml", "application/yaml")),
        ("text/plain, application/yaml;q=0.5", "", ("yaml", "application/yaml;q=0.5")),  # as DRF has it
        ("application/json; indent=4", "", ("json", "application/json; indent=4")),
        # Nothing matches: the first renderer, where DRF raised NotAcceptable.
        ("application/problem+json", "", ("json", "application/json")),
        ("text/plain", "", ("json", "application/json")),
        # ?format= narrows first; nothing of it in Accept: that format's first renderer, not the view's.
        ("text/plain", "?format=yaml", ("yaml", "application/yaml")),
        (None, "?format=yaml", ("yaml", "application/yaml")),
        # A format no renderer has is disregarded, where DRF raised Http404.
        ("text/plain", "?format=xml", ("json", "application/json")),
        ("application/yaml", "?format=xml", ("yaml", "application/yaml")),
    ],
)
def test_renderer_choice(accept: str | None, query: str, expected: tuple[str, str]) -> None:
    assert _select(accept, query) == expected
