"""Issue 20: the packs as MCP tools, each call a paid run, runs as durable tasks (SPEC §11, SEP-2663).

Driven by the official SDK's own client (`mcp.Client` over `streamable_http_client`, the key in the
Authorization header) against a real gunicorn and a real Celery worker. Each scenario is one `asyncio.run`, and
the database is read between them (the ORM is sync-only).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import httpx2
import mcp_types as types
import pytest
import requests
from mcp import Client
from mcp.client.extension import ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict

from billing.models import KeySpend, LedgerTransaction
from dpp.key_limits import window_bounds
from runs.models import Run
from runs.serializers import MONEY_PATTERN
from tests.e2e.harness import E2E, TenantInfo, assert_money_balanced, fast_env, purge_queues, redis_stack
from tests.helpers.inputs import DECISION_INPUTS
from tests.helpers.money import USD
from tests.helpers.personas import make_persona, make_plan, persona_on_plan
from tests.helpers.problems import without_request_members
from tests.processes import celery_worker, gunicorn
from tests.runs.keys_support import child_key, root_key

pytestmark = [*E2E]

TASKS = "io.modelcontextprotocol/tasks"
DECISION_PRICE = "0.0056"  # 0.0050 + 0.0001 × 3 options × 2 criteria
PACK_TOOLS = {"run_decision", "run_url", "run_diagnostic"}
OTHER_TOOLS = {"quote_run", "get_run", "cancel_run", "get_balance"}
RETENTION_S = 30 * 86_400


class CreateTaskResult(types.Result):
    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    poll_interval_milliseconds: int | None = None
    ttl_seconds: int | None = None


async def _never(result: CreateTaskResult, ctx: Any) -> types.CallToolResult:
    raise AssertionError("these tests read the task themselves (allow_claimed=True)")


class TasksClient(ClientExtension):
    """Declares SEP-2663 on every request and knows the `resultType: "task"` shape."""

    identifier = TASKS

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=_never)]


class TaskIdParams(types.RequestParams):
    task_id: str


class GetTask(types.Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"


class CancelTask(types.Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param = "taskId"


class Detail(BaseModel):
    """Any result, members as sent (a Task, an empty ack)."""

    model_config = ConfigDict(extra="allow")


@contextlib.asynccontextmanager
async def connected(base_url: str, api_key: str, *, tasks: bool = False) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    extensions = [TasksClient()] if tasks else None
    async with http, Client(streamable_http_client(f"{base_url}/mcp", http_client=http), extensions=extensions) as c:
        yield c


def scenario[T](base_url: str, api_key: str, steps: Callable[[Client], Awaitable[T]], *, tasks: bool = False) -> T:
    async def main() -> T:
        async with connected(base_url, api_key, tasks=tasks) as client:
            return await steps(client)

    return asyncio.run(main())


async def task_get(client: Client, task_id: str) -> dict[str, Any]:
    return (await client.session.send_request(GetTask(params=TaskIdParams(task_id=task_id)), Detail)).model_dump()


async def task_cancel(client: Client, task_id: str) -> dict[str, Any]:
    return (await client.session.send_request(CancelTask(params=TaskIdParams(task_id=task_id)), Detail)).model_dump()


async def create_task(client: Client, tool: str, arguments: dict[str, Any]) -> CreateTaskResult:
    created = await client.session.call_tool(tool, arguments, allow_claimed=True)
    assert isinstance(created, CreateTaskResult), created
    return created


def diagnostic_args(sleep_ms: int, outcome: str = "succeed", max_cost_usd: str = "0.0500") -> dict[str, Any]:
    return {"inputs": {"sleep_ms": sleep_ms, "cost_usd": "0.0300", "outcome": outcome}, "max_cost_usd": max_cost_usd}


async def task_until(client: Client, task_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (task := await task_get(client, task_id))["status"] != status:
        assert time.monotonic() < deadline, task
        await asyncio.sleep(0.2)
    return task


def without_meta(result: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in result.items() if name != "_meta"}  # the SDK stamps serverInfo there


def kinds_of(run_id: str) -> list[str]:
    return sorted(LedgerTransaction.objects.filter(run_id=run_id).values_list("kind", flat=True))


def decision_args(**extra: Any) -> dict[str, Any]:
    return {"inputs": DECISION_INPUTS, "max_cost_usd": "0.0500", **extra}


def test_tools_listed_with_schemas_and_a_decision_call_is_one_charged_run() -> None:
    with redis_stack() as stack, stack.worker(concurrency=1):
        tenant = stack.tenant()
        key = f"mcp-same-{uuid.uuid4().hex[:8]}"

        async def steps(client: Client) -> tuple[Any, ...]:
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
            called = await client.call_tool("run_decision", decision_args())
            first = await client.call_tool("run_decision", decision_args(idempotency_key=key))
            again = await client.call_tool("run_decision", decision_args(idempotency_key=key))
            balance = await client.call_tool("get_balance", {})
            unknown = await client.call_tool("get_run", {"run_id": str(uuid.uuid4())})
            return listed, called, first, again, balance, unknown

        listed, called, first, again, balance, unknown = scenario(stack.base_url, tenant.api_key, steps)
        assert_money_balanced(stack, tenant, 2 * 5_600)

    assert set(listed) == PACK_TOOLS | OTHER_TOOLS
    decision = listed["run_decision"]
    schema = decision.input_schema
    assert schema["required"] == ["inputs", "max_cost_usd"]
    assert set(schema["properties"]) == {"inputs", "max_cost_usd", "timebox_sec", "idempotency_key"}
    assert schema["properties"]["max_cost_usd"]["pattern"] == MONEY_PATTERN
    assert schema["properties"]["timebox_sec"] == {**schema["properties"]["timebox_sec"], "minimum": 1, "maximum": 90}
    assert schema["properties"]["idempotency_key"]["pattern"] == "^[A-Za-z0-9_.:-]{8,64}$"
    assert "options" in schema["properties"]["inputs"]["properties"]  # the pack's own schema (packs.registry)
    assert len(decision.output_schema["oneOf"]) == 2
    assert "0.0050 + 0.0001" in (decision.description or "")
    assert decision.annotations.read_only_hint is False
    assert decision.annotations.open_world_hint is False
    assert listed["run_url"].annotations.open_world_hint is True

    assert called.is_error is False, called
    assert called.structured_content["winner"] in ("A", "B", "C")
    run_id = called.meta["dpp/run_id"]
    assert called.meta["dpp/charged_usd"] == DECISION_PRICE
    run = Run.objects.get(pk=run_id)
    assert run.status == "COMPLETED"
    assert run.charged_micros == 5_600
    assert called.meta["dpp/result_sha256"] == run.result_sha256
    assert kinds_of(run_id) == ["RESERVE", "SETTLE"]
    assert called.content[0].text.startswith("{")

    assert first.meta["dpp/run_id"] == again.meta["dpp/run_id"]  # the same key: one run, one charge
    assert Run.objects.filter(tenant_id=tenant.tenant_id, idempotency_key=key).count() == 1
    assert Run.objects.filter(tenant_id=tenant.tenant_id).count() == 2
    assert balance.structured_content["available_usd"] == "9.9888"  # 10 − 2 × 0.0056
    assert unknown.is_error is True
    assert unknown.structured_content["reason_code"] == "NOT_FOUND"


def test_refusals_are_tool_errors_and_a_bad_key_is_401() -> None:
    with redis_stack() as stack:
        broke = make_persona(plan="starter", credit_micros=0, prefix="mcp")

        async def steps(client: Client) -> tuple[Any, ...]:
            names = {tool.name for tool in (await client.list_tools()).tools}
            poor = await client.call_tool("run_decision", decision_args())
            invalid = await client.call_tool("run_decision", {"inputs": {"options": []}, "max_cost_usd": "0.0500"})
            with pytest.raises(MCPError) as not_listed:
                await client.call_tool("run_diagnostic", {"inputs": {}, "max_cost_usd": "0.0500"})
            return names, poor, invalid, not_listed.value

        names, poor, invalid, not_listed = scenario(stack.base_url, broke.api_key, steps)
        slow = persona_on_plan(make_plan(f"mcp-{uuid.uuid4().hex[:8]}", submits_per_min=1))

        async def over(client: Client) -> tuple[Any, ...]:
            first = await client.call_tool("run_decision", decision_args(timebox_sec=1))  # no worker: pending
            second = await client.call_tool("run_decision", decision_args(timebox_sec=1))
            return first, second, await client.call_tool("get_balance", {})  # reads are another budget

        first, limited, reads = scenario(stack.base_url, slow.api_key, over)
        bad_key = requests.post(
            f"{stack.base_url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={"Authorization": "Bearer dpp_live_nope", "Accept": "application/json, text/event-stream"},
            timeout=10,
        )
        no_key = requests.post(f"{stack.base_url}/mcp", json={}, timeout=10)

    assert names == {"run_decision", "run_url"} | OTHER_TOOLS  # starter: no diagnostic
    assert poor.is_error is True
    assert poor.structured_content["reason_code"] == "INSUFFICIENT_FUNDS"
    assert poor.structured_content["status"] == 402
    assert invalid.is_error is True
    assert invalid.structured_content["reason_code"] == "INVALID_INPUTS"
    assert not_listed.code == types.INVALID_PARAMS  # the JSON-RPC error for an unknown tool
    assert "Unknown tool" in not_listed.message
    assert Run.objects.filter(tenant_id=broke.tenant.pk).count() == 0
    assert first.structured_content == {
        "run_id": first.structured_content["run_id"],
        "status": "QUEUED",
        "poll": "call get_run",
    }
    assert limited.is_error is True
    assert limited.structured_content["reason_code"] == "RATE_LIMITED"
    assert reads.is_error is False
    assert Run.objects.filter(tenant_id=slow.tenant.pk).count() == 1
    for response in (bad_key, no_key):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["reason_code"] == "UNAUTHENTICATED"


def test_tasks_are_runs_polled_to_their_result_canceled_and_scoped_to_the_tenant() -> None:
    with redis_stack() as stack, stack.worker(concurrency=2):
        tenant, other = stack.tenant(), stack.tenant()

        async def mine(client: Client) -> tuple[Any, ...]:
            created = await create_task(client, "run_diagnostic", diagnostic_args(300))
            done = await task_until(client, created.task_id, "completed")
            failing = await create_task(client, "run_diagnostic", diagnostic_args(0, outcome="fail"))
            failed = await task_until(client, failing.task_id, "completed")
            slow = await create_task(client, "run_diagnostic", diagnostic_args(20_000, max_cost_usd="0.5000"))
            ack = await task_cancel(client, slow.task_id)
            canceled = await task_until(client, slow.task_id, "cancelled")
            return created, done, failed, ack, canceled

        created, done, failed, ack, canceled = scenario(stack.base_url, tenant.api_key, mine, tasks=True)

        async def theirs(client: Client) -> tuple[Any, ...]:
            with pytest.raises(MCPError) as foreign:
                await task_get(client, created.task_id)
            with pytest.raises(MCPError) as unknown:
                await task_get(client, str(uuid.uuid4()))
            cancel_foreign = await task_cancel(client, created.task_id)
            return foreign.value, unknown.value, cancel_foreign

        foreign, unknown, cancel_foreign = scenario(stack.base_url, other.api_key, theirs, tasks=True)
        cancel_fee = Run.objects.get(pk=canceled["taskId"]).charged_micros
        assert cancel_fee in (0, 10_000)  # canceled while queued (full release) or running (the minimum fee)
        assert_money_balanced(stack, tenant, 30_000 + 5_000 + cancel_fee)  # the cost, the fail's minimum fee

    assert (created.result_type, created.status) == ("task", "working")
    assert created.poll_interval_milliseconds == 1500
    assert created.ttl_seconds == RETENTION_S
    run = Run.objects.get(pk=created.task_id)  # the task id is the run id: the run existed before the answer
    assert (done["resultType"], done["taskId"]) == ("complete", created.task_id)
    result = done["result"]
    assert result["structuredContent"]["slept_ms"] >= 300
    assert result["_meta"] == {
        "dpp/run_id": str(run.pk),
        "dpp/charged_usd": "0.0300",
        "dpp/result_sha256": run.result_sha256,
    }
    assert failed["result"]["isError"] is True
    assert failed["result"]["structuredContent"]["status"] == "FAILED"
    assert failed["result"]["structuredContent"]["reason_code"] == "PACK_FAILED"
    assert without_meta(ack) == {"resultType": "complete"}  # an empty acknowledgement (SEP-2663)
    assert "result" not in canceled
    assert Run.objects.get(pk=canceled["taskId"]).status == "CANCELED"
    assert (
        (foreign.code, foreign.message)
        == (unknown.code, unknown.message)
        == (
            types.INVALID_PARAMS,
            "Failed to retrieve task: Task not found",
        )
    )
    assert without_meta(cancel_foreign) == {"resultType": "complete"}  # acked (SEP-2663), nothing done
    assert Run.objects.get(pk=created.task_id).status == "COMPLETED"
    assert kinds_of(created.task_id) == ["RESERVE", "SETTLE"]


def test_a_restart_of_the_api_between_a_task_and_its_get_loses_nothing() -> None:
    env = fast_env(DPP_STORAGE="local", DPP_MCP_WAIT_S="1")
    purge_queues()
    tenant = make_persona(plan="unlimited", credit_micros=USD, prefix="mcp")
    with celery_worker(env, concurrency=2):
        with gunicorn(env) as first:

            async def start(client: Client) -> CreateTaskResult:
                return await create_task(client, "run_diagnostic", diagnostic_args(2_500))

            async def wait(client: Client) -> types.CallToolResult:  # a client without the extension
                return await client.call_tool("run_diagnostic", diagnostic_args(2_500))

            task = scenario(first, tenant.api_key, start, tasks=True)
            waited = scenario(first, tenant.api_key, wait)
        with gunicorn(env) as second:  # another API process: it never saw the task

            async def finish(client: Client) -> tuple[dict[str, Any], types.CallToolResult]:
                done = await task_until(client, task.task_id, "completed")
                pending_id = waited.structured_content["run_id"]
                deadline = time.monotonic() + 20
                while (polled := await client.call_tool("get_run", {"run_id": pending_id})).meta is None:
                    assert polled.structured_content["poll"] == "call get_run"
                    assert time.monotonic() < deadline, polled
                    await asyncio.sleep(0.2)
                return done, polled

            done, polled = scenario(second, tenant.api_key, finish, tasks=True)
            assert (done["status"], done["taskId"]) == ("completed", task.task_id)

    assert task.status == "working"
    # Without the extension the call waited DPP_MCP_WAIT_S (1 s) and answered the pending shape.
    assert waited.is_error is False
    assert waited.structured_content["poll"] == "call get_run"
    assert waited.structured_content["status"] in ("QUEUED", "PROCESSING")
    assert done["result"]["_meta"]["dpp/charged_usd"] == "0.0300"
    assert (polled.meta or {})["dpp/run_id"] == waited.structured_content["run_id"]
    assert polled.structured_content["slept_ms"] >= 2_500
    assert Run.objects.filter(tenant=tenant.tenant, status="COMPLETED").count() == 2


def _tomorrow() -> str:
    return window_bounds("day", datetime.now(tz=UTC))[1].isoformat().replace("+00:00", "Z")


def rest_quote(base_url: str, api_key: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/quotes of what quote_run was given: the §9 body, or the problem."""
    reservation = {name: arguments[name] for name in ("max_cost_usd",) if name in arguments}
    payload = {"pack_type": arguments["pack_type"], "inputs": arguments["inputs"], "reservation": reservation}
    headers = {"Authorization": f"Bearer {api_key}"}
    answer: dict[str, Any] = requests.post(f"{base_url}/v1/quotes", json=payload, headers=headers, timeout=10).json()
    return answer


def test_quote_run_and_a_key_over_its_spend_limit_are_the_v1_answers_as_tool_results() -> None:
    with redis_stack() as stack, stack.worker(concurrency=1):
        persona = make_persona(plan="unlimited", credit_micros=USD, prefix="mcp")
        key = child_key(root_key(persona), spend_limit_micros=60_000, spend_window="day")
        decision = {"pack_type": "decision", "inputs": DECISION_INPUTS}
        resets = {_tomorrow()}

        async def steps(client: Client) -> tuple[Any, ...]:
            quoted = await client.call_tool("quote_run", decision)
            called = await client.call_tool("run_decision", decision_args(max_cost_usd="0.0100"))  # charged 0.0056
            after = await client.call_tool("quote_run", decision)
            over = await client.call_tool("run_decision", decision_args(max_cost_usd="0.0600"))
            refused = await client.call_tool("quote_run", {**decision, "max_cost_usd": "0.0600"})
            return quoted, called, after, over, refused

        quoted, called, after, over, refused = scenario(stack.base_url, key.secret, steps)
        rest = [rest_quote(stack.base_url, key.secret, arguments) for arguments in (decision, decision)]
        rest_refused = rest_quote(stack.base_url, key.secret, {**decision, "max_cost_usd": "0.0600"})
        resets.add(_tomorrow())  # a UTC midnight may have passed meanwhile
        assert_money_balanced(stack, TenantInfo(persona.tenant.pk, persona.api_key, USD), 5_600)

    assert quoted.is_error is False, quoted
    assert quoted.structured_content == {
        "pack_type": "decision",
        "price_floor_usd": DECISION_PRICE,
        "price_ceiling_usd": DECISION_PRICE,
        "price_exact": True,
        "suggested_max_cost_usd": DECISION_PRICE,
        "minimum_fee_usd": "0.0050",
        "available_usd": "1.0000",
        "key_spend_remaining_usd": "0.0600",
        "accepted": True,
    }
    assert called.is_error is False, called
    assert called.meta["dpp/charged_usd"] == DECISION_PRICE
    # Settled: the key's spend is the charge, not the reservation; the quote sees it, as POST /v1/quotes does.
    assert after.structured_content["key_spend_remaining_usd"] == "0.0544"
    assert after.structured_content == rest[1]
    assert after.content[0].text.startswith("{")

    assert over.is_error is True, over
    problem = over.structured_content
    assert (problem["status"], problem["reason_code"]) == (402, "KEY_SPEND_LIMIT")
    assert {name: problem[name] for name in ("limit_usd", "spent_usd", "required_usd", "window", "key_prefix")} == {
        "limit_usd": "0.0600",
        "spent_usd": "0.0056",
        "required_usd": "0.0600",
        "window": "day",
        "key_prefix": key.prefix,
    }
    assert problem["resets_at"] in resets
    assert refused.is_error is True, refused
    assert without_request_members(refused.structured_content) == without_request_members(problem)
    assert without_request_members(rest_refused) == without_request_members(problem)  # /v1's very problem
    assert Run.objects.filter(tenant=persona.tenant).count() == 1  # the refusals and the quotes created nothing
    assert KeySpend.objects.get(api_key__prefix=key.prefix).spent_micros == 5_600
