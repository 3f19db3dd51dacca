"""The outermost middleware: request and trace ids, body size limit, metrics, access log, problem safety net."""

from __future__ import annotations

import io
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.middleware import csrf
from django.urls import Resolver404, resolve

from dpp.http.errors import ApplicationError
from dpp.http.parsers import declared_length
from dpp.http.problems import HTML_PATHS, PROBLEM_CONTENT_TYPE, problem_from_status, problem_response
from dpp.http.ratelimit import anonymous_limited
from dpp.observability import (
    HTTP_LATENCY,
    HTTP_REQUESTS,
    request_id_var,
    run_id_var,
    tenant_id_var,
    trace_id_from_headers,
    trace_id_var,
    tracestate_from_headers,
    tracestate_var,
)

access_log = logging.getLogger("dpp.access")

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
# Error responses deliberately not problems: the admin's own HTML pages (HTML_PATHS). And /readyz's 503, whose
# body is the SPEC's {"status": "not_ready", "services": …} (its other errors, a 405, are problems).
_READYZ = "/readyz"
# And the MCP transport's own errors on /mcp (a JSON-RPC error body with its 4xx, which an MCP client reads).
_MCP = "/mcp"
# Metric labels take only these methods, others are "other": any token is a method to HTTP, and a label per
# invented one (`curl -X FOOBAR123`) would grow /metrics without bound at an anonymous client's will.
_LABELLED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_LOGGED_METHOD_CHARS = 32


class _UnreadableBodyError(Exception):
    """The server could not deliver the request's body (broken chunk encoding, client gone)."""


_STATIC_PREFIX = "/" + settings.STATIC_URL.lstrip("/")


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:  # answered before the URL was resolved (a 413), or a path no route has
        try:
            match = resolve(request.path_info)
        except Resolver404:
            # Files whitenoise serves (the admin's and /docs' CSS and JavaScript) never reach the URLconf.
            return "static" if request.path_info.startswith(_STATIC_PREFIX) else "unmatched"
    return f"/{match.route}" if match.route else "unmatched"


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        traceparent = request.headers.get("traceparent")
        trace_id = trace_id_from_headers(request.headers.get("X-Trace-Id"), traceparent)
        tracestate = tracestate_from_headers(traceparent, request.headers.get("tracestate"))
        tokens = (
            request_id_var.set(request_id),
            trace_id_var.set(trace_id),
            tenant_id_var.set(None),
            run_id_var.set(None),
            tracestate_var.set(tracestate),
        )
        try:
            response = self._respond(request)
            if request.path_info.startswith("/v1/") and "RateLimit" not in response:
                response = anonymous_limited(request, response)  # every /v1 answer carries RateLimit headers
            response["X-Request-ID"] = request_id
            response["X-Trace-Id"] = trace_id_var.get() or trace_id  # a run's own, once the view adopted it
            if tracestate:
                response["tracestate"] = tracestate  # the vendors' state, as carried (W3C Trace Context §3.3)
            if request.method == "HEAD":
                # A GET's headers (Content-Length included) without its body (RFC 9110 §9.3.2): gunicorn would
                # drop the body anyway, with a warning per request. A stream (a CSV export) is not even started:
                # the response still closes the generator it was given.
                if isinstance(response, StreamingHttpResponse):
                    response.streaming_content = ()
                else:
                    response.content = b""
            self._observe(request, response, time.perf_counter() - started)
            return response
        finally:
            tracestate_var.reset(tokens[4])
            run_id_var.reset(tokens[3])
            tenant_id_var.reset(tokens[2])
            trace_id_var.reset(tokens[1])
            request_id_var.reset(tokens[0])

    def _respond(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and not response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)
            and not request.path_info.startswith(HTML_PATHS)
            and not (request.path_info == _READYZ and response.status_code == 503)
            and request.path_info != _MCP
        ):
            converted = problem_from_status(response.status_code, request)
            for header, value in response.items():  # Allow, Retry-After, the security and CORS headers…
                if header.lower() not in ("content-type", "content-length"):
                    converted.setdefault(header, value)
            return converted
        return response

    @staticmethod
    def _observe(request: HttpRequest, response: HttpResponse, elapsed: float) -> None:
        route = _route(request)
        method = request.method or ""
        label = method if method in _LABELLED_METHODS else "other"
        HTTP_REQUESTS.labels(route, label, str(response.status_code)).inc()
        HTTP_LATENCY.labels(route, label).observe(elapsed)
        if route not in ("/health", "/metrics"):
            access_log.info(
                "%s %s %s",
                method[:_LOGGED_METHOD_CHARS],
                request.path,
                response.status_code,
                extra={
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                    "route": route,
                },
            )


class BodyLimitMiddleware:
    """256 KiB at most per request body (413), also for a chunked body. It sits inside the security, clickjacking
    and CORS middleware, so that its answers carry their headers like any other."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            too_large = self._too_large(request) or self._chunked_too_large(request)
        except _UnreadableBodyError:
            return problem_response(ApplicationError("MALFORMED_JSON", "The chunked request body is broken."), request)
        if too_large:
            return problem_response(ApplicationError("PAYLOAD_TOO_LARGE"), request)
        return self.get_response(request)

    @staticmethod
    def _too_large(request: HttpRequest) -> bool:
        length = declared_length(request.META)
        return length is not None and length > settings.DPP_MAX_BODY_BYTES

    @staticmethod
    def _chunked_too_large(request: HttpRequest) -> bool:
        """A body sent with `Transfer-Encoding: chunked` has no Content-Length, and Django would read it as empty
        (a valid submit would be 422 "pack_type is required"). Read it here, up to the limit and one byte more:
        over the limit it is a 413; else the request reads it as if its length had been sent.

        Only where the server undoes the chunking and ends the input with the body (`wsgi.input_terminated`, as
        gunicorn does): elsewhere (runserver) the raw input is not the body, and Django's behaviour stays."""
        meta = request.META
        if (
            request.method not in ("POST", "PUT", "PATCH")
            or "chunked" not in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
            or meta.get("CONTENT_LENGTH")
            or not meta.get("wsgi.input_terminated")
        ):
            return False
        limit = settings.DPP_MAX_BODY_BYTES
        try:
            body = meta["wsgi.input"].read(limit + 1)
        except Exception as exc:  # the server's own errors: a bad chunk size, a client gone
            raise _UnreadableBodyError from exc
        if len(body) > limit:
            return True
        meta["CONTENT_LENGTH"] = str(len(body))
        request._stream = io.BytesIO(body)
        return False


# The admin's middleware (sessions, users, messages, CSRF) does nothing for the API, which authenticates by key,
# keeps no session and renders no HTML (DRF views are CSRF-exempt): skipped there, it saves ~10 % of a poll's CPU.
API_PREFIXES = ("/v1/", "/mcp", "/health", "/readyz", "/metrics")


class _SkippedOnApi:
    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(API_PREFIXES):
            response: HttpResponse = self.get_response(request)  # type: ignore[attr-defined]
            return response
        skipped: HttpResponse = super().__call__(request)  # type: ignore[misc]
        return skipped


class SessionMiddleware(_SkippedOnApi, sessions.SessionMiddleware):
    pass


class AuthenticationMiddleware(_SkippedOnApi, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(_SkippedOnApi, messages.MessageMiddleware):
    pass


class CsrfViewMiddleware(_SkippedOnApi, csrf.CsrfViewMiddleware):
    # Django calls process_view on its own, outside __call__: skipped there too, or a POST to /health would be
    # a CSRF 403 instead of the view's 405.
    def process_view(
        self,
        request: HttpRequest,
        callback: Callable[..., HttpResponseBase],
        callback_args: tuple[Any, ...],
        callback_kwargs: dict[str, Any],
    ) -> HttpResponseForbidden | None:
        if request.path_info.startswith(API_PREFIXES):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)
