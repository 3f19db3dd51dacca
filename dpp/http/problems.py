"""RFC 9457 problem responses for every error path: DRF exceptions, Django's 404/500 handlers, and a safety
net (in the middleware) for any other error response. No stack trace, SQL or secret reaches a body: the
detail is either ours or a fixed sentence; the exception itself goes to the log only.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.html import escape
from django.views import defaults
from rest_framework import exceptions as drf

from dpp.http.errors import PROBLEMS, REASON_BY_STATUS, ApplicationError, DependencyUnavailableError, ProblemType
from dpp.observability import current_trace_id, request_id_var

logger = logging.getLogger("dpp.http.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"
UNAVAILABLE_RETRY_AFTER_S = 5


def problem_body(error: ApplicationError, *, instance: str, trace_id: str) -> dict[str, Any]:
    """The RFC 9457 members of `error` (SPEC §4.1); `instance` is always a string, the request's path."""
    body: dict[str, Any] = {
        "type": f"/problems/{ProblemType.slug(error.reason_code)}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
        "reason_code": error.reason_code,
        "trace_id": trace_id,
    }
    if error.errors is not None:
        body["errors"] = error.errors
    body.update(error.extra)
    return body


def problem_instance(request: HttpRequest | None, request_id: str | None) -> str:
    """The problem's `instance`, always a string (SPEC §4.1): the request's path, or, where no request was read (a
    DRF exception handler called without one, a request line gunicorn refused), the occurrence by request id."""
    if request is not None and request.path:
        return request.path
    return f"urn:dpp:request:{request_id or uuid.uuid4().hex}"


def problem_response(error: ApplicationError, request: HttpRequest | None) -> HttpResponse:
    instance = problem_instance(request, request_id_var.get())
    body = problem_body(error, instance=instance, trace_id=current_trace_id())
    response = HttpResponse(
        json.dumps(body, ensure_ascii=False), status=error.status, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in error.headers.items():
        response[name] = value
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="dpp"'
    return response


def _field_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested validation detail into [{"field", "message"}]."""
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            name = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            out.extend(_field_errors(value, name))
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [{"field": prefix, "message": str(item)} for item in detail]
        out = []
        for index, item in enumerate(detail):
            out.extend(_field_errors(item, f"{prefix}[{index}]"))
        return out
    return [{"field": prefix, "message": str(detail)}]


def _unavailable(dependency: str, exc: Exception) -> ApplicationError:
    # The database or the result storage is unreachable or restarting: the client may retry; the log has the cause.
    logger.error("%s unavailable: %s", dependency, type(exc).__name__, exc_info=exc)
    return ApplicationError(
        "UNAVAILABLE",
        f"The {dependency} is unreachable; retry after Retry-After seconds.",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


# Known exceptions → the problem a client can act on; first match wins (subclasses before their bases).
_MAPPING: list[tuple[tuple[type[Exception], ...], Callable[[Any], ApplicationError]]] = [
    ((drf.NotAuthenticated, drf.AuthenticationFailed), lambda exc: ApplicationError("UNAUTHENTICATED")),
    ((Http404, drf.NotFound), lambda exc: ApplicationError("NOT_FOUND")),
    ((drf.MethodNotAllowed,), lambda exc: ApplicationError("METHOD_NOT_ALLOWED", str(exc.detail))),
    ((drf.UnsupportedMediaType,), lambda exc: ApplicationError("UNSUPPORTED_MEDIA_TYPE", str(exc.detail))),
    ((drf.ParseError,), lambda exc: ApplicationError("MALFORMED_JSON", str(exc.detail))),
    ((drf.ValidationError,), lambda exc: ApplicationError("VALIDATION_ERROR", errors=_field_errors(exc.detail))),
    (
        (drf.Throttled,),
        lambda exc: ApplicationError("RATE_LIMITED", headers={"Retry-After": str(int(exc.wait or 1))}),
    ),
    ((drf.PermissionDenied,), lambda exc: ApplicationError("FORBIDDEN")),
    ((OperationalError, InterfaceError), lambda exc: _unavailable("database", exc)),
    ((DependencyUnavailableError,), lambda exc: _unavailable(exc.dependency, exc)),
    ((drf.APIException,), lambda exc: ApplicationError(REASON_BY_STATUS.get(exc.status_code, "BAD_REQUEST"))),
]


def as_application_error(exc: Exception) -> ApplicationError | None:
    """Map a known exception to an ApplicationError; None for a bug (it becomes a logged 500)."""
    if isinstance(exc, ApplicationError):
        return exc
    for types, make in _MAPPING:
        if isinstance(exc, types):
            return make(exc)
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """DRF's EXCEPTION_HANDLER: every exception raised in an API view becomes a problem response."""
    request = context.get("request")
    django_request = getattr(request, "_request", request)
    error = as_application_error(exc)
    if error is None:
        kind = "database error" if isinstance(exc, DatabaseError) else "unhandled exception"
        logger.error("%s in %s", kind, getattr(django_request, "path", "?"), exc_info=exc)
        error = ApplicationError("INTERNAL_ERROR")
    return problem_response(error, django_request)


# Pages for people (the admin): their errors stay Django's own HTML pages. An unknown /static/ file is a problem
# like any unknown path (SPEC §4.1; a browser does not show the body of a stylesheet's 404).
HTML_PATHS = ("/admin/",)


def _for_people(request: HttpRequest) -> bool:
    return request.path_info.startswith(HTML_PATHS)


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _for_people(request):
        return defaults.page_not_found(request, exception or Http404())
    return problem_response(ApplicationError("NOT_FOUND"), request)


def handler500(request: HttpRequest) -> HttpResponse:
    if _for_people(request):
        return defaults.server_error(request)
    return problem_response(ApplicationError("INTERNAL_ERROR"), request)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _for_people(request):
        return defaults.bad_request(request, exception or SuspiciousOperation())
    return problem_response(ApplicationError("BAD_REQUEST"), request)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _for_people(request):
        return defaults.permission_denied(request, exception or PermissionDenied())
    return problem_response(ApplicationError("FORBIDDEN"), request)


def error_for_status(status: int, detail: str | None = None) -> ApplicationError:
    """The problem of an error status that no reason code of ours explains by itself (a 405 of a plain view, a
    CSRF 403, a request line gunicorn refused with 414)."""
    reason = REASON_BY_STATUS.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    error = ApplicationError(reason, detail)
    error.status = status
    return error


def problem_from_status(status: int, request: HttpRequest) -> HttpResponse:
    """The safety net: a plain error response from Django turned into a problem."""
    return problem_response(error_for_status(status), request)


def problem_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The human page behind each problem `type` URI."""
    for reason_code, problem in PROBLEMS.items():
        if ProblemType.slug(reason_code) == slug:
            html = (
                "<!doctype html><html><head><meta charset='utf-8'>"
                f"<title>{escape(problem.title)} — DPP</title></head><body>"
                f"<h1>{escape(problem.title)}</h1>"
                f"<p>HTTP status <b>{problem.status}</b>, reason code <code>{escape(reason_code)}</code>.</p>"
                f"<p>{escape(problem.description)}</p>"
                "<p>Every DPP error is an RFC 9457 problem (<code>application/problem+json</code>) with "
                "<code>type</code>, <code>title</code>, <code>status</code>, <code>detail</code>, "
                "<code>instance</code>, <code>reason_code</code> and <code>trace_id</code>. "
                "Quote the trace id when you contact support.</p></body></html>"
            )
            return HttpResponse(html, content_type="text/html; charset=utf-8")
    return handler404(request)
