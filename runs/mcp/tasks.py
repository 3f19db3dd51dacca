"""The MCP tasks extension (SEP-2663, `io.modelcontextprotocol/tasks`) with DPP's runs as its tasks.

A `tools/call` of a pack tool whose request declares the extension (its per-request client capabilities) is
answered at once with `CreateTaskResult`: the task id is the run id, and the run is committed before the answer
(the SEP's "durably created"). `tasks/get` reads the run, `tasks/cancel` cancels it as POST /v1/runs/{id}/cancel
does. There is no task store: a restarted API process, or another replica, answers for every task, and a task is
scoped to its tenant as runs are (another tenant's task id is unknown, as an id that never existed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import mcp_types as types
from django.conf import settings
from mcp.server import Server
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding, compose_tool_call_handler
from mcp.shared.exceptions import MCPError
from pydantic import Field

from dpp.http.errors import ApplicationError
from packs.base import Pack
from runs import services
from runs.mcp.auth import Caller, caller_of
from runs.mcp.calls import ended_result, in_db, owned_run, refused
from runs.models import Run, RunStatus
from runs.presenters import RECOMMENDED_POLL_INTERVAL_MS

logger = logging.getLogger("dpp.runs.mcp")

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
_TASK_STATUS = {
    RunStatus.QUEUED: "working",
    RunStatus.PROCESSING: "working",
    RunStatus.COMPLETED: "completed",
    RunStatus.FAILED: "completed",  # the tool call completed with a tool error (isError), not a JSON-RPC error
    RunStatus.EXPIRED: "completed",
    RunStatus.CANCELED: "cancelled",
}


class TaskParams(types.RequestParams):
    task_id: str = Field(alias="taskId")
    request_state: str | None = Field(default=None, alias="requestState")


def declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client capabilities declare the extension (SEP-2663: per request)."""
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions)


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


def task_of(run: Run) -> dict[str, Any]:
    """The Task members of a run: the result retention is the task's TTL."""
    task: dict[str, Any] = {
        "taskId": str(run.pk),
        "status": _TASK_STATUS[RunStatus(run.status)],
        "statusMessage": f"run {run.status}" + (f" ({run.reason_code})" if run.reason_code else ""),
        "createdAt": _iso(run.created_at),
        "lastUpdatedAt": _iso(run.updated_at),
        "ttlSeconds": settings.DPP_RESULT_RETENTION_DAYS * 86_400,
        "pollIntervalMilliseconds": RECOMMENDED_POLL_INTERVAL_MS,
    }
    return task


def task_detail(caller: Caller, run: Run) -> dict[str, Any]:
    """tasks/get: the task, with the CallToolResult once the run ended other than CANCELED."""
    detail = {"resultType": "complete", **task_of(run)}
    if detail["status"] == "completed":
        detail["result"] = ended_result(caller, run)
    return detail


def _task_run(caller: Caller, task_id: str) -> Run:
    try:
        return owned_run(caller, task_id)
    except ApplicationError:
        raise MCPError(code=types.INVALID_PARAMS, message="Failed to retrieve task: Task not found") from None


def _cancel(caller: Caller, task_id: str) -> None:
    """Cancel the run as POST /v1/runs/{id}/cancel does; the ack is the same whatever it found (SEP-2663)."""
    try:
        run = owned_run(caller, task_id)
        services.run_cancel(tenant=caller.tenant, run_id=run.pk, api_key=caller.key)
    except ApplicationError as exc:  # unknown, foreign, already ended: nothing to cancel
        logger.info("tasks/cancel of %s: %s", task_id, exc.reason_code)


class TasksExtension(Extension):
    identifier = TASKS_EXTENSION

    def __init__(
        self,
        *,
        listed_pack: Callable[[Caller, str], Pack | None],
        submit: Callable[[Caller, str, dict[str, Any]], Run],
    ) -> None:
        self._listed_pack = listed_pack
        self._submit = submit

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding(method="tasks/get", params_type=TaskParams, handler=self._get),
            MethodBinding(method="tasks/cancel", params_type=TaskParams, handler=self._cancel),
        )

    async def intercept_tool_call(
        self, params: types.CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        caller = caller_of(ctx)
        pack = self._listed_pack(caller, params.name) if declared(ctx) else None
        if pack is None:
            return await call_next(ctx)
        try:
            run = await in_db(self._submit)(caller, pack.pack_type, dict(params.arguments or {}))
        except Exception as exc:  # refused: a CallToolResult with the problem, no task
            return refused(caller, exc)
        return {"resultType": "task", **task_of(run)}

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        caller = caller_of(ctx)
        run = await in_db(_task_run)(caller, params.task_id)
        detail: dict[str, Any] = await in_db(task_detail)(caller, run)
        return detail

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        await in_db(_cancel)(caller_of(ctx), params.task_id)
        return {"resultType": "complete"}


def apply_extension(server: Server[Any], extension: Extension) -> None:
    """What `MCPServer(extensions=[…])` does, for the low-level server: the extension's methods, its capability
    advertised, and its interceptor around `tools/call`."""
    for binding in extension.methods():
        server.add_request_handler(binding.method, binding.params_type, binding.handler)
    server.extensions[extension.identifier] = extension.settings()
    core = server.get_request_handler("tools/call")
    assert core is not None  # noqa: S101 - built with on_call_tool
    server.add_request_handler(
        "tools/call", types.CallToolRequestParams, compose_tool_call_handler([extension], core.handler)
    )
