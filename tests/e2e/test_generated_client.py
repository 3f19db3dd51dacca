"""A client generated from the served OpenAPI document alone drives the whole flow (SPEC §4 OpenAPI), against a real
gunicorn and a real celery worker: submit with typed decision inputs, poll, the result (its hash checked on the raw
bytes), three pages of the list, and a cancel. The submit's tracestate reaches the worker's log lines (SPEC §4
Trace context)."""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from tests.e2e.harness import E2E, Stack, TenantInfo, redis_stack
from tests.processes import BIN

pytestmark = E2E

PACKAGE = "dpp_client"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACESTATE = "dpp=e2e,congo=t61rcWkgMzE"


def _generate(base_url: str, folder: Path) -> None:
    """openapi-python-client (requirements-dev.txt) on the document as served, into `folder`/dpp_client."""
    document = folder / "openapi.json"
    document.write_bytes(requests.get(f"{base_url}/v1/openapi.json", timeout=10).content)
    config = folder / "config.json"  # no post hooks: the generated code is imported, not formatted
    config.write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    args = [str(BIN / "openapi-python-client"), "generate", "--path", str(document), "--config", str(config)]
    args += ["--meta", "none", "--output-path", str(folder / PACKAGE)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unable to" not in done.stdout + done.stderr, done.stdout + done.stderr  # a piece it had to skip


@dataclass
class Generated:
    stack: Stack
    tenant: TenantInfo
    modules: dict[str, ModuleType]  # the generated package's modules, by name below it ("models", "api.runs.…")


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Generated]:
    """A stack with a worker consuming, a tenant, and the client generated from the stack's document."""
    with redis_stack() as stack, stack.worker():
        _generate(stack.base_url, tmp_path)
        sys.path.insert(0, str(tmp_path))
        try:
            names = ["client", "models", "api.runs.runs_submit", "api.runs.runs_get", "api.runs.runs_result"]
            names += ["api.runs.runs_list", "api.runs.runs_cancel"]
            modules = {name: importlib.import_module(f"{PACKAGE}.{name}") for name in names}
            yield Generated(stack, stack.tenant(), modules)
        finally:
            sys.path.remove(str(tmp_path))
            for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
                del sys.modules[name]


def _decision_body(m: ModuleType) -> Any:
    """The README's decision, in the generated client's typed models."""
    criterion, direction = m.DecisionInputsCriteriaItem, m.DecisionInputsCriteriaItemDirection
    inputs = m.DecisionInputs(
        question="Which laptop?",
        options=["A", "B"],
        criteria=[
            criterion(name="price", weight=2, direction=direction.COST),
            criterion(name="speed", weight=1, direction=direction.BENEFIT),
        ],
        scores=m.DecisionInputsScores.from_dict({"A": {"price": 900, "speed": 7}, "B": {"price": 1200, "speed": 9}}),
    )
    reservation = m.ReservationInRequest(max_cost_usd="0.0500", timebox_sec=30)
    return m.DecisionRunRequest(pack_type="decision", inputs=inputs, reservation=reservation)


def _diagnostic_body(m: ModuleType, *, sleep_ms: int = 0) -> Any:
    inputs = m.DiagnosticInputs(sleep_ms=sleep_ms, cost_usd="0.0100", outcome=m.DiagnosticInputsOutcome.SUCCEED)
    reservation = m.ReservationInRequest(max_cost_usd="0.0500", timebox_sec=60)
    return m.DiagnosticRunRequest(pack_type="diagnostic", inputs=inputs, reservation=reservation)


def _submit(modules: dict[str, Any], client: Any, body: Any, **headers: str) -> str:
    response = modules["api.runs.runs_submit"].sync_detailed(
        client=client, body=body, idempotency_key=f"e2e-{uuid.uuid4().hex}", **headers
    )
    assert response.status_code == 202, response.content
    assert isinstance(response.parsed, modules["models"].ReceiptOut)
    return str(response.parsed.run_id)


def _wait(modules: dict[str, Any], client: Any, run_id: str, status: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = modules["api.runs.runs_get"].sync_detailed(run_id, client=client)
        assert response.status_code == 200, response.content
        run = response.parsed
        if run.status.value == status:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run.status.value}, not {status}"
        time.sleep(0.2)


def test_a_generated_client_drives_submit_poll_result_list_and_cancel(generated: Generated) -> None:
    modules = generated.modules
    m = modules["models"]
    client = modules["client"].AuthenticatedClient(base_url=generated.stack.base_url, token=generated.tenant.api_key)

    submitted = modules["api.runs.runs_submit"].sync_detailed(
        client=client,
        body=_decision_body(m),
        idempotency_key=f"e2e-{uuid.uuid4().hex}",
        traceparent=TRACEPARENT,
        tracestate=TRACESTATE,
    )
    assert submitted.status_code == 202, submitted.content
    assert submitted.headers["tracestate"] == TRACESTATE  # echoed back
    run_id = str(submitted.parsed.run_id)
    assert submitted.parsed.meta.trace_id == "0af7651916cd43dd8448eb211c80319c"

    run = _wait(modules, client, run_id, "COMPLETED")
    assert run.cost.used_usd == "0.0054"  # 5_000 + 100 × 2 options × 2 criteria
    result = modules["api.runs.runs_result"].sync_detailed(run_id, client=client)
    assert result.status_code == 200, result.content
    assert hashlib.sha256(result.content).hexdigest() == run.result.sha256  # the raw bytes, as served
    envelope = result.parsed
    assert isinstance(envelope, m.ResultEnvelope)
    assert isinstance(envelope.data, m.DecisionOutput)  # the typed decision output
    assert envelope.data.winner in ("A", "B")
    assert [row.rank for row in envelope.data.ranking] == [1, 2]

    # The worker's log lines of this run carry the submit's tracestate.
    lines = [json.loads(line) for line in generated.stack.workers[0].log().splitlines() if line.startswith("{")]
    of_run = [line for line in lines if line.get("run_id") == run_id]
    assert of_run, "the worker logged nothing for the run"
    assert {line.get("tracestate") for line in of_run} == {TRACESTATE}

    # Three pages of two: the decision, four quick diagnostics and the one to cancel, newest first.
    run_ids = [run_id, *(_submit(modules, client, _diagnostic_body(m)) for _ in range(4))]
    to_cancel = _submit(modules, client, _diagnostic_body(m, sleep_ms=30_000))
    run_ids.append(to_cancel)
    pages, cursor = [], None
    for _ in range(3):
        kwargs = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = modules["api.runs.runs_list"].sync_detailed(client=client, **kwargs)
        assert page.status_code == 200, page.content
        pages.append([str(item.run_id) for item in page.parsed.data])
        cursor = page.parsed.next_cursor
    assert [len(page) for page in pages] == [2, 2, 2]
    assert cursor is None  # the last page says so
    assert [run for page in pages for run in page] == run_ids[::-1]

    cancel = modules["api.runs.runs_cancel"].sync_detailed(to_cancel, client=client)
    assert cancel.status_code in (200, 202), cancel.content  # QUEUED → 200; PROCESSING → 202, the worker stops it
    canceled = _wait(modules, client, to_cancel, "CANCELED", timeout=30)
    assert canceled.error.reason_code == "CANCELED_BY_CLIENT"
