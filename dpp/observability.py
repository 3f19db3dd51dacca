"""Trace context, structured JSON logs and Prometheus metrics shared by the API, workers and the reaper.

The trace id, tenant id and run id of the work at hand live in context variables; every log record carries
them, so one run can be followed across API, worker and reaper by its trace id.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from celery.signals import before_task_publish, task_postrun, task_prerun
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.registry import Collector

trace_id_var: ContextVar[str | None] = ContextVar("dpp_trace_id", default=None)
request_id_var: ContextVar[str | None] = ContextVar("dpp_request_id", default=None)
tenant_id_var: ContextVar[str | None] = ContextVar("dpp_tenant_id", default=None)
run_id_var: ContextVar[str | None] = ContextVar("dpp_run_id", default=None)

tracestate_var: ContextVar[str | None] = ContextVar("dpp_tracestate", default=None)

_TRACE_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# W3C Trace Context §3.3.1.3: a simple key, or tenant@system; a value of printable ASCII but "," and "=", not
# ending in a space.
_TRACESTATE_MEMBER_RE = re.compile(
    r"(?:[a-z][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_TRACESTATE_MAX_MEMBERS = 32
_TRACESTATE_MAX_CHARS = 512
# W3C Trace Context §3.2: lowercase hex; version ff is invalid; a later version may append fields (ignored), 00 not.
_TRACEPARENT_RE = re.compile(r"(?!ff)([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")


def new_trace_id() -> str:
    return uuid.uuid4().hex


def valid_trace_id(value: str | None) -> bool:
    return value is not None and _TRACE_ID_RE.fullmatch(value) is not None


def traceparent_trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C traceparent; None if it is absent or invalid."""
    if traceparent:
        match = _TRACEPARENT_RE.fullmatch(traceparent.strip())
        if match:
            version, trace_id, parent_id, later_fields = match.groups()
            if trace_id != "0" * 32 and parent_id != "0" * 16 and not (version == "00" and later_fields):
                return trace_id
    return None


def trace_id_from_headers(trace_header: str | None, traceparent: str | None) -> str:
    """X-Trace-Id if well formed, else the trace id of a W3C traceparent, else a new one."""
    if valid_trace_id(trace_header):
        return trace_header  # type: ignore[return-value]
    return traceparent_trace_id(traceparent) or new_trace_id()


def tracestate_from_headers(traceparent: str | None, tracestate: str | None) -> str | None:
    """The W3C tracestate to carry, normalised (`k=v,k2=v2`); None without a valid traceparent (§3.3: it means
    nothing alone) or when it does not parse (§3.3.1.1: then it is not propagated at all). Over 512 characters,
    members are dropped from the end (§3.3.1.5 allows truncating by whole members), which bounds a log line."""
    if not tracestate or traceparent_trace_id(traceparent) is None:
        return None
    members = [member.strip() for member in tracestate.split(",")]
    members = [member for member in members if member]  # empty members are allowed, and dropped (§3.3.1.1)
    keys = [member.split("=", 1)[0] for member in members]
    if not members or len(members) > _TRACESTATE_MAX_MEMBERS or len(set(keys)) != len(keys):
        return None
    if not all(_TRACESTATE_MEMBER_RE.fullmatch(member) for member in members):
        return None
    while len(",".join(members)) > _TRACESTATE_MAX_CHARS:
        members.pop()
    return ",".join(members) or None


def current_trace_id() -> str:
    """The trace id of the work at hand; a fresh one outside any request or task."""
    trace_id = trace_id_var.get()
    if trace_id is None:
        trace_id = new_trace_id()
        trace_id_var.set(trace_id)
    return trace_id


def adopt_run(*, trace_id: str, run_id: str) -> None:
    """The rest of this request is about one run: its log lines and its `X-Trace-Id` carry the run's trace id
    (the request middleware resets both when the request ends)."""
    trace_id_var.set(trace_id)
    run_id_var.set(run_id)


@contextmanager
def log_context(
    *, trace_id: str | None = None, tenant_id: str | None = None, run_id: str | None = None
) -> Iterator[None]:
    """Bind ids for the log records written inside the block (a task, a reaper action)."""
    tokens = [
        (var, var.set(value))
        for var, value in ((trace_id_var, trace_id), (tenant_id_var, tenant_id), (run_id_var, run_id))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


# The tracestate of the request that published a task travels as a message header to the worker, whose log
# lines for that task carry it (a task re-published later by the reaper has none: it is not stored with the run).
_TRACESTATE_HEADER = "tracestate"
_TRACESTATE_BOUND = "dpp_tracestate_bound"


def _send_tracestate(*, headers: dict[str, Any] | None = None, **_: Any) -> None:
    tracestate = tracestate_var.get()
    if tracestate and headers is not None:
        headers.setdefault(_TRACESTATE_HEADER, tracestate)


def _bind_tracestate(*, task: Any, **_: Any) -> None:
    request = task.request  # a worker's request has the message headers as attributes, an eager one `headers`
    tracestate = getattr(request, _TRACESTATE_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        _TRACESTATE_HEADER
    )
    if isinstance(tracestate, str) and tracestate:
        setattr(request, _TRACESTATE_BOUND, tracestate_var.set(tracestate))


def _unbind_tracestate(*, task: Any, **_: Any) -> None:
    token = getattr(task.request, _TRACESTATE_BOUND, None)
    if token is not None:
        try:
            tracestate_var.reset(token)
        except ValueError:  # postrun ran in another context than prerun: clear rather than leak it
            tracestate_var.set(None)
        setattr(task.request, _TRACESTATE_BOUND, None)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (
            ("trace_id", trace_id_var),
            ("request_id", request_id_var),
            ("tenant_id", tenant_id_var),
            ("run_id", run_id_var),
            ("tracestate", tracestate_var),
        ):
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra=` fields are kept, the ids of the context added."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(
            {key: value for key, value in record.__dict__.items() if key not in _STANDARD and value is not None}
        )
        if record.exc_info:
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            payload["stack"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(payload, default=str, ensure_ascii=False)


HTTP_REQUESTS = Counter(
    "dpp_http_requests_total", "HTTP requests by route, method and status.", ("route", "method", "status")
)
HTTP_LATENCY = Histogram(
    "dpp_http_request_duration_seconds",
    "HTTP request latency by route.",
    ("route", "method"),
    buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12),
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "dpp_rate_limit_fail_open_total", "Requests let through because Redis was unreachable for rate limiting."
)

RUNS_FINISHED = Counter(
    "dpp_runs_finished_total",
    "Runs that reached a terminal state, by pack, status and reason code (empty for a completed run).",
    ("pack", "status", "reason"),
)
CHARGED_MICROS = Counter("dpp_charged_micros_total", "USD micros charged to tenants by runs as they ended.", ("pack",))
_RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 90, 180, 600)
RUN_DURATION = Histogram(
    "dpp_run_duration_seconds",
    "From a run's start to its terminal state (runs that started).",
    ("pack",),
    buckets=_RUN_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "dpp_run_queue_wait_seconds",
    "From a run's acceptance to its start (or to its end, for one that never started).",
    ("pack",),
    buckets=(*_RUN_BUCKETS, 1800, 3600),
)
# Counted by the webhook sender: outcome is delivered, failed (will be retried) or exhausted (given up).
WEBHOOK_DELIVERIES = Counter("dpp_webhook_deliveries_total", "Webhook delivery attempts by outcome.", ("outcome",))


def run_finished_observe(
    *,
    pack: str,
    status: str,
    reason: str,
    charge_micros: int,
    created_at: datetime,
    started_at: datetime | None,
    completed_at: datetime,
) -> None:
    """Count a run's terminal transition (called on commit: a rolled-back one is not counted)."""
    RUNS_FINISHED.labels(pack, status, reason).inc()
    CHARGED_MICROS.labels(pack).inc(charge_micros)
    QUEUE_WAIT.labels(pack).observe(max(0.0, ((started_at or completed_at) - created_at).total_seconds()))
    if started_at is not None:
        RUN_DURATION.labels(pack).observe(max(0.0, (completed_at - started_at).total_seconds()))


# Collectors that read the database at scrape time (registered by other apps, e.g. the reaper's gauges). In
# gunicorn's multiprocess mode /metrics builds a fresh registry per scrape and adds these to it.
DB_COLLECTORS: list[Collector] = []


def register_db_collector(collector: Collector) -> None:
    if any(type(existing) is type(collector) for existing in DB_COLLECTORS):
        return
    DB_COLLECTORS.append(collector)
    REGISTRY.register(collector)


# Connected by call, not by decorator: Celery's signals are untyped, and a decorator would untype the handlers.
before_task_publish.connect(_send_tracestate)
task_prerun.connect(_bind_tracestate)
task_postrun.connect(_unbind_tracestate)
