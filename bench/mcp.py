"""Benchmark: what an MCP tool call adds over plain REST for the same run (SPEC §11; target ≤ 10 ms at p50).

    .venv/bin/python bench/mcp.py --base-url http://127.0.0.1:8000 --key dpp_live_… [--calls 200]
    .venv/bin/python -m bench.mcp --base-url http://127.0.0.1:8000 --key dpp_live_… [--calls 200]   (the same)

Against a running DPP (`make run`: gunicorn and a worker) and a key whose plan allows the decision pack. One
decision run is made and completed first (an MCP call with an idempotency key); then, `--calls` times each,
alternating:
- REST: what an agent does for that run — POST /v1/runs (the same Idempotency-Key: the replayed receipt), GET
  /v1/runs/{id} (COMPLETED), GET its result envelope;
- MCP: `tools/call run_decision` with the same `idempotency_key`, through the official SDK client (one POST /mcp,
  the output, its `_meta`), on one connected client.
Both see the same completed run, so the difference is the MCP layer alone (transport, SDK, the WSGI adapter),
not a worker's latency. Prints p50/p90 of each and the p50 difference, then one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402, F401 - takes bench/ off sys.path, so that `import mcp` finds the SDK

# isort: split
import httpx2  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

DECISION = {
    "question": "Which supplier?",
    "options": ["A", "B", "C"],
    "criteria": [
        {"name": "price", "weight": 2, "direction": "cost"},
        {"name": "quality", "weight": 1, "direction": "benefit"},
    ],
    "scores": {"A": {"price": 10, "quality": 7}, "B": {"price": 12, "quality": 9}, "C": {"price": 8, "quality": 5}},
}


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def _rest(http: httpx2.AsyncClient, base: str, key: str) -> None:
    body = {"pack_type": "decision", "inputs": DECISION, "reservation": {"max_cost_usd": "0.0500"}}
    receipt = await http.post(f"{base}/v1/runs", json=body, headers={"Idempotency-Key": key})
    run = (await http.get(f"{base}/v1/runs/{receipt.json()['run_id']}")).json()
    assert run["status"] == "COMPLETED", run
    assert (await http.get(run["result"]["url"])).status_code == 200


async def main_async(base: str, api_key: str, calls: int) -> dict[str, Any]:
    key = f"bench-mcp-{uuid.uuid4().hex[:12]}"
    arguments = {"inputs": DECISION, "max_cost_usd": "0.0500", "idempotency_key": key}
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        httpx2.AsyncClient(headers=headers, timeout=60) as mcp_http,
        Client(streamable_http_client(f"{base}/mcp", http_client=mcp_http)) as client,
    ):
        first = await client.call_tool("run_decision", arguments)  # waits for the run to complete
        assert not first.is_error, first
        assert first.meta, first
        rest_ms, mcp_ms = [], []
        for _ in range(calls):
            started = time.perf_counter()
            await _rest(http, base, key)
            rest_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            result = await client.call_tool("run_decision", arguments)
            mcp_ms.append((time.perf_counter() - started) * 1000)
            assert result.meta == first.meta, result
    return {
        "calls": calls,
        "rest_p50_ms": round(statistics.median(rest_ms), 2),
        "rest_p90_ms": round(_p(rest_ms, 90), 2),
        "mcp_p50_ms": round(statistics.median(mcp_ms), 2),
        "mcp_p90_ms": round(_p(mcp_ms, 90), 2),
        "mcp_overhead_p50_ms": round(statistics.median(mcp_ms) - statistics.median(rest_ms), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="an API key whose plan allows the decision pack")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    figures = asyncio.run(main_async(args.base_url.rstrip("/"), args.key, args.calls))
    for name, value in figures.items():
        print(f"{name:>22}: {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
