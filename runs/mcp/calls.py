"""What the MCP tools and tasks do with runs: submit one as POST /v1/runs does, wait for it, and present it as a
`CallToolResult` (wire-shaped dicts: the SDK serialises them as they are)."""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from dpp.http.errors import ApplicationError
from dpp.http.problems import as_application_error, problem_body
from dpp.money import format_usd
from runs import results, services
from runs.apis import RunOwnerMixin
from runs.mcp.auth import Caller
from runs.models import Run, RunStatus
from runs.submission import idempotency_key_parse

logger = logging.getLogger("dpp.runs.mcp")

MCP_PATH = "/mcp"
PENDING_POLL = "call get_run"
# The wait polls soon at first (most runs end in tens of ms) and backs off to 250 ms: ≤ ~110 reads in 25 s.
_WAIT_FIRST_S, _WAIT_BACKOFF, _WAIT_MAX_S = 0.01, 1.5, 0.25
_PACK_ARGUMENTS = frozenset({"inputs", "max_cost_usd", "timebox_sec", "idempotency_key"})


def in_db[**P, T](fn: Callable[P, T]) -> Callable[P, Any]:
    """`fn` (sync, ORM) run off the event loop in a worker thread, with Django's per-request connection hygiene:
    a connection that broke or outlived CONN_MAX_AGE is replaced first, as at the start of a request."""

    def fresh(*args: P.args, **kwargs: P.kwargs) -> T:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return functools.wraps(fn)(sync_to_async(fresh, thread_sensitive=False))


def text_result(structured: Any, *, is_error: bool = False, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A CallToolResult: the structured content, and one text content with the same JSON (for hosts that show
    text only)."""
    text = json.dumps(structured, ensure_ascii=False, sort_keys=True)
    result: dict[str, Any] = {
        "resultType": "complete",
        "content": [{"type": "text", "text": text}],
        "structuredContent": structured,
    }
    if is_error:
        result["isError"] = True
    if meta:
        result["_meta"] = meta
    return result


def problem_result(caller: Caller, error: ApplicationError) -> dict[str, Any]:
    """What /v1 would answer with a problem, as a tool error the model can act on (`reason_code`)."""
    return text_result(problem_body(error, instance=MCP_PATH, trace_id=caller.trace_id), is_error=True)


def refused(caller: Caller, exc: Exception) -> dict[str, Any]:
    """Any failure of a tool as its problem (a bug: logged, INTERNAL_ERROR)."""
    error = as_application_error(exc)
    if error is None:
        logger.error("MCP tool failed", exc_info=exc)
        error = ApplicationError("INTERNAL_ERROR")
    return problem_result(caller, error)


def submit_body(pack_type: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The POST /v1/runs body of a `run_<pack>` call; validation of its members is the submit's own."""
    unknown = sorted(set(arguments) - _PACK_ARGUMENTS)
    if unknown:
        errors = [{"field": name, "message": "unknown argument"} for name in unknown]
        raise ApplicationError("VALIDATION_ERROR", "Unknown arguments: " + ", ".join(unknown), errors=errors)
    reservation = {name: arguments[name] for name in ("max_cost_usd", "timebox_sec") if name in arguments}
    return {"pack_type": pack_type, "inputs": arguments.get("inputs"), "reservation": reservation}


def pack_submit(caller: Caller, pack_type: str, arguments: dict[str, Any]) -> Run:
    """Submit the run of a pack tool call through the submit service of POST /v1/runs (money, limits, replay);
    without an `idempotency_key` each call is a new run."""
    if caller.refusal is not None:
        raise caller.refusal
    given = arguments.get("idempotency_key")
    key = idempotency_key_parse(given) if given is not None else f"mcp-{uuid.uuid4().hex}"
    body = submit_body(pack_type, arguments)
    accepted = services.run_submit(
        tenant=caller.tenant, plan=caller.plan, key=caller.key, body=body, idempotency_key=key, trace_id=caller.trace_id
    )
    return accepted.run


_owner = RunOwnerMixin()


def owned_run(caller: Caller, raw_id: Any) -> Run:
    """The caller's run; NOT_FOUND for an unknown one, another tenant's, or an id that is not a UUID."""
    if not isinstance(raw_id, str):
        raise ApplicationError("NOT_FOUND")
    return _owner.owned_run(caller.tenant, raw_id, caller.key)


def pending_result(run: Run) -> dict[str, Any]:
    return text_result({"run_id": str(run.pk), "status": run.status, "poll": PENDING_POLL})


def run_error(run: Run) -> dict[str, Any]:
    return {"run_id": str(run.pk), "status": run.status, "reason_code": run.reason_code, "detail": run.error_detail}


def completed_result(caller: Caller, run: Run) -> dict[str, Any]:
    """A completed run's output (`data` of its envelope), with its id, exact charge and envelope hash."""
    expires_at = results.result_expires_at(run)
    raw = results.envelope_read(run.result_key) if run.result_key else None
    if raw is None or (expires_at is not None and expires_at.timestamp() <= time.time()):
        return problem_result(caller, ApplicationError("RESULT_EXPIRED"))
    meta = {
        "dpp/run_id": str(run.pk),
        "dpp/charged_usd": format_usd(run.charged_micros or 0),
        "dpp/result_sha256": run.result_sha256,
    }
    return text_result(json.loads(raw)["data"], meta=meta)


def ended_result(caller: Caller, run: Run) -> dict[str, Any] | None:
    """The CallToolResult of a run that ended (an error one unless COMPLETED); None while it may still run."""
    if run.status == RunStatus.COMPLETED:
        return completed_result(caller, run)
    if run.is_terminal:
        return text_result(run_error(run), is_error=True)
    return None


async def run_wait(caller: Caller, run: Run, timebox_sec: int) -> Run:
    """Poll the run in the database until it ends or min(timebox, DPP_MCP_WAIT_S) has passed."""
    deadline, pause = time.monotonic() + min(timebox_sec, settings.DPP_MCP_WAIT_S), _WAIT_FIRST_S
    while not run.is_terminal and time.monotonic() < deadline:
        await anyio.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * _WAIT_BACKOFF, _WAIT_MAX_S)
        run = await in_db(owned_run)(caller, str(run.pk))
    return run
