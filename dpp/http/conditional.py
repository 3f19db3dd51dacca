"""Conditional GET (RFC 9110 §13): a strong ETag on a view's 2xx answers, `If-None-Match` → 304 and a failing
`If-Match` → 412 PRECONDITION_FAILED. Django's `get_conditional_response` evaluates the preconditions (in the
RFC's order, `*` and lists, weak comparison for If-None-Match, strong for If-Match); this module only makes its
answers ours: a problem instead of a bare 412, and a 304 that keeps the headers of the 200 it stands for."""

from __future__ import annotations

import hashlib
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.template.response import SimpleTemplateResponse
from django.utils.cache import get_conditional_response
from django.utils.http import quote_etag

from dpp.http.errors import ApplicationError
from dpp.http.problems import problem_response

# Headers that describe the body itself: a 304 has none, a problem its own.
_BODY_HEADERS = frozenset({"content-type", "content-length"})


def _copy_headers(source: HttpResponseBase, target: HttpResponseBase) -> HttpResponseBase:
    for name, value in source.items():
        if name.lower() not in _BODY_HEADERS and name not in target:
            target[name] = value
    return target


def conditional_answer(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """`response` with a strong ETag (one it set, else the SHA-256 of its bytes), or the 304 / 412 that the
    request's preconditions call for. Only a GET's (or HEAD's) 2xx with a body in memory: nothing else here
    has a representation to compare (a 302 to a signed URL, a problem)."""
    if request.method not in ("GET", "HEAD") or not 200 <= response.status_code < 300:
        return response
    if isinstance(response, SimpleTemplateResponse):  # DRF's Response: rendered once, here instead of later
        response.render()
    if not isinstance(response, HttpResponse):  # a stream: its bytes are not known yet
        return response
    etag = response.get("ETag") or quote_etag(hashlib.sha256(response.content).hexdigest())
    response["ETag"] = etag
    answer = get_conditional_response(request, etag=etag, response=response)
    if answer is None or answer is response:  # None only without a response to fall back on
        return response
    if answer.status_code == 412:
        refused = problem_response(
            ApplicationError("PRECONDITION_FAILED", f"If-Match does not match the current ETag {etag}."), request
        )
        return _copy_headers(response, refused)
    return _copy_headers(response, answer)  # 304: the ETag, the cost and rate-limit headers of the 200


class ConditionalGetMixin:
    """For DRF views whose GET answers are worth caching (a run, a result): see `conditional_answer`."""

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        return conditional_answer(getattr(request, "_request", request), response)
