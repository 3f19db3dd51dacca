"""The MCP server: one `run_<pack>` tool per pack the caller's key may run, plus quote_run, get_run, cancel_run
and get_balance (SPEC §11). Built on the SDK's low-level `Server`, since the tool list is the caller's: its plan
(and key) decide which packs are tools."""

from __future__ import annotations

import copy
import functools
from typing import Any

import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

from billing.selectors import balances_get
from dpp.http.errors import ApplicationError
from dpp.money import format_usd
from packs.base import Pack
from packs.registry import all_packs, get_pack
from runs import presenters, services
from runs.mcp.auth import Caller, caller_of, packs_allowed
from runs.mcp.calls import (
    PENDING_POLL,
    ended_result,
    in_db,
    owned_run,
    pack_submit,
    pending_result,
    refused,
    run_wait,
    text_result,
)
from runs.mcp.tasks import TasksExtension, apply_extension
from runs.models import RunStatus
from runs.serializers import MONEY_PATTERN
from runs.submission import IDEMPOTENCY_KEY_RE

PACK_TOOL_PREFIX = "run_"
_SCHEMAS = "#/components/schemas/"
_RUN_ID = {"type": "object", "properties": {"run_id": {"type": "string", "format": "uuid"}}, "required": ["run_id"]}
_MONEY = {"type": "string", "pattern": MONEY_PATTERN, "description": 'USD as a 4-decimal string, e.g. "0.0500"'}
_TIMEBOX = {"type": "integer", "minimum": 1, "maximum": 90, "description": "seconds the run may take (default 90)"}
PENDING_SHAPE = {
    "type": "object",
    "description": "The run has not ended yet: call get_run with its run_id.",
    "properties": {
        "run_id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": [RunStatus.QUEUED, RunStatus.PROCESSING]},
        "poll": {"type": "string", "const": PENDING_POLL},
    },
    "required": ["run_id", "status", "poll"],
    "additionalProperties": False,
}


def _inline(schema: Any, components: dict[str, Any]) -> Any:
    """`schema` with every OpenAPI component reference replaced by the component (a tool schema stands alone)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMAS):
            return _inline(components[ref.removeprefix(_SCHEMAS)], components)
        return {key: _inline(value, components) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, components) for item in schema]
    return schema


@functools.cache
def _documented_outputs() -> dict[str, dict[str, Any]]:
    """The packs' output schemas as the OpenAPI document has them (one source): DecisionOutput for decision."""
    from drf_spectacular.generators import SchemaGenerator  # the URL map imports this module: not at import time

    document = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    components = document["components"]["schemas"]
    return {"decision": _inline(components["DecisionOutput"], components)}


def output_schema(pack_type: str) -> dict[str, Any]:
    """`oneOf` the pack's output and the pending shape; a pack whose output the document leaves open is any
    object but the pending shape (else both branches would match one and `oneOf` would fail)."""
    open_output = {"type": "object", "description": "the pack's output", "not": {"required": ["poll"]}}
    output = _documented_outputs().get(pack_type, open_output)
    return {"type": "object", "oneOf": [output, PENDING_SHAPE]}


def input_schema(pack: Pack) -> dict[str, Any]:
    inputs = {key: value for key, value in copy.deepcopy(pack.input_schema).items() if key != "$schema"}
    idempotency_key = {
        "type": "string",
        "pattern": f"^{IDEMPOTENCY_KEY_RE.pattern}$",
        "description": "the same key and arguments replay the same run (never a second charge); omitted: a new run",
    }
    return {
        "type": "object",
        "properties": {
            "inputs": inputs,
            "max_cost_usd": _MONEY,
            "timebox_sec": _TIMEBOX,
            "idempotency_key": idempotency_key,
        },
        "required": ["inputs", "max_cost_usd"],
    }


def pack_tool(pack: Pack, caller: Caller) -> types.Tool:
    cap = format_usd(caller.plan.max_cost_micros(pack.pack_type))
    description = (
        f"{pack.description} Each call is a paid run: max_cost_usd is reserved from your balance, the run is charged"
        f" its actual cost (never more) and the rest released. Pricing: {pack.pricing()['formula']} USD"
        f" ({pack.pricing()['model']}); a failed or canceled run that started costs the minimum fee. Your plan"
        f" allows max_cost_usd up to {cap}. Use quote_run for the price of given inputs."
    )
    return types.Tool.model_validate(
        {
            "name": PACK_TOOL_PREFIX + pack.pack_type,
            "description": description,
            "inputSchema": input_schema(pack),
            "outputSchema": output_schema(pack.pack_type),
            "annotations": {"readOnlyHint": False, "openWorldHint": pack.pack_type == "url"},
        }
    )


_OTHER_TOOLS: list[dict[str, Any]] = [
    {
        "name": "quote_run",
        "description": "What a run would cost and whether it would be accepted; creates nothing, moves no money.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "pack_type": {"type": "string"},
                "inputs": {"type": "object"},
                "max_cost_usd": _MONEY,
                "timebox_sec": _TIMEBOX,
            },
            "required": ["pack_type", "inputs"],
        },
        "annotations": {"readOnlyHint": True, "openWorldHint": False},
    },
    {
        "name": "get_run",
        "description": "A run's output once it completed (or its error); while it runs, its status to poll again.",
        "inputSchema": _RUN_ID,
        "annotations": {"readOnlyHint": True, "openWorldHint": False},
    },
    {
        "name": "cancel_run",
        "description": "Cancel a run: queued, fully released; running, it ends at the minimum fee.",
        "inputSchema": _RUN_ID,
        "annotations": {"readOnlyHint": False, "destructiveHint": True, "openWorldHint": False},
    },
    {
        "name": "get_balance",
        "description": "Your available balance (what new runs can reserve) and what open runs hold, in USD.",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"readOnlyHint": True, "openWorldHint": False},
    },
]
OTHER_TOOL_NAMES = frozenset(tool["name"] for tool in _OTHER_TOOLS)


def listed_packs(caller: Caller) -> list[Pack]:
    allowed = packs_allowed(caller, [pack.pack_type for pack in all_packs()])
    return [pack for pack in all_packs() if pack.pack_type in allowed]


def listed_pack(caller: Caller, tool_name: str) -> Pack | None:
    """The pack of a `run_<pack>` tool listed for this caller, else None."""
    pack = get_pack(tool_name.removeprefix(PACK_TOOL_PREFIX)) if tool_name.startswith(PACK_TOOL_PREFIX) else None
    return pack if pack is not None and pack in listed_packs(caller) else None


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    caller = caller_of(ctx)
    tools = [pack_tool(pack, caller) for pack in listed_packs(caller)]
    tools += [types.Tool.model_validate(tool) for tool in _OTHER_TOOLS]
    return types.ListToolsResult(tools=tools)


def tool_input_schema(name: str) -> dict[str, Any] | None:
    """For the transport's Mcp-Param header check, before any handler: no caller, no database."""
    pack = get_pack(name.removeprefix(PACK_TOOL_PREFIX)) if name.startswith(PACK_TOOL_PREFIX) else None
    if pack is not None:
        return input_schema(pack)
    return next((tool["inputSchema"] for tool in _OTHER_TOOLS if tool["name"] == name), None)


def unknown_tool(name: str) -> MCPError:
    return MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")


async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
    caller = caller_of(ctx)
    arguments = dict(params.arguments or {})
    pack = listed_pack(caller, params.name)
    if pack is None and params.name not in OTHER_TOOL_NAMES:
        raise unknown_tool(params.name)
    try:
        if pack is not None:
            return await _run_pack(caller, pack, arguments)
        return await in_db(_other_tool)(caller, params.name, arguments)
    except Exception as exc:  # a refusal is the tool's answer, not a protocol error
        return refused(caller, exc)


async def _run_pack(caller: Caller, pack: Pack, arguments: dict[str, Any]) -> dict[str, Any]:
    """Submit, wait up to min(timebox, DPP_MCP_WAIT_S), then the run's result or the pending shape."""
    run = await in_db(pack_submit)(caller, pack.pack_type, arguments)
    run = await run_wait(caller, run, run.timebox_sec)
    ended = await in_db(ended_result)(caller, run)
    return ended if ended is not None else pending_result(run)


def _other_tool(caller: Caller, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    if caller.refusal is not None:  # over the reads limit
        raise caller.refusal
    return _OTHER_HANDLERS[name](caller, arguments)


def _quote(caller: Caller, arguments: dict[str, Any]) -> dict[str, Any]:
    reservation = {name: arguments[name] for name in ("max_cost_usd", "timebox_sec") if name in arguments}
    body = {"pack_type": arguments.get("pack_type"), "inputs": arguments.get("inputs"), "reservation": reservation}
    quote = services.run_quote(tenant=caller.tenant, plan=caller.plan, key=caller.key, body=body)
    return text_result(presenters.quote_body(quote))


def _get_run(caller: Caller, arguments: dict[str, Any]) -> dict[str, Any]:
    run = owned_run(caller, arguments.get("run_id"))
    ended = ended_result(caller, run)
    return ended if ended is not None else pending_result(run)


def _cancel_run(caller: Caller, arguments: dict[str, Any]) -> dict[str, Any]:
    run = owned_run(caller, arguments.get("run_id"))
    outcome = services.run_cancel(tenant=caller.tenant, run_id=run.pk, api_key=caller.key)
    available = balances_get(tenant_id=caller.tenant.pk).available_micros
    return text_result(presenters.run_body(outcome.run, available_micros=available, request=caller.request))


def _get_balance(caller: Caller, arguments: dict[str, Any]) -> dict[str, Any]:
    if arguments:
        raise ApplicationError("VALIDATION_ERROR", "get_balance takes no arguments.")
    balances = balances_get(tenant_id=caller.tenant.pk)
    return text_result(
        {
            "plan": caller.plan.code,
            "available_usd": format_usd(balances.available_micros),
            "held_usd": format_usd(balances.held_micros),
            "currency": "USD",
        }
    )


_OTHER_HANDLERS = {"quote_run": _quote, "get_run": _get_run, "cancel_run": _cancel_run, "get_balance": _get_balance}


def build_server() -> Server[Any]:
    server: Server[Any] = Server(
        "dpp",
        version="1",
        instructions="DPP runs packs as paid tools: each run_<pack> call reserves max_cost_usd and is charged its "
        "actual cost. quote_run prices a call first; get_balance shows your funds.",
        get_tool_input_schema=tool_input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    apply_extension(server, TasksExtension(listed_pack=listed_pack, submit=pack_submit))
    return server
