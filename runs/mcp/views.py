"""`/mcp`: the MCP endpoint of the API process. A /v1 view in all but its body: DRF authenticates the bearer key
(billing's key check and plan, 401 with `WWW-Authenticate: Bearer` when missing or bad), the plan's rate limits
count the request (a pack tool's call against submits, anything else against reads), and the SDK's transport
answers the JSON-RPC request (runs.mcp.bridge)."""

from __future__ import annotations

import io
import json
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from billing.apis import TenantApiView
from dpp.http.errors import ApplicationError
from dpp.models import ApiKey
from dpp.observability import current_trace_id
from runs.mcp import bridge
from runs.mcp.auth import ENVIRON_KEY, Caller

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


def _message(request: Request) -> dict[str, Any]:
    """The JSON-RPC message, as far as the rate limits need it; the transport judges the rest."""
    try:
        message = json.loads(request._request.body or b"{}")
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _is_pack_call(message: dict[str, Any]) -> bool:
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return message.get("method") == "tools/call" and isinstance(name, str) and name.startswith("run_")


class McpApi(TenantApiView):
    def rate_limit_policy_for(self, request: Request) -> str:
        return "submits" if _is_pack_call(_message(request)) else "reads"

    def check_throttles(self, request: Request) -> None:
        """Over the limit, a tools/call is answered by the tool (isError, the 429 problem), anything else is a 429."""
        try:
            super().check_throttles(request)
        except ApplicationError as exc:
            if _message(request).get("method") != "tools/call":
                raise
            request._dpp_mcp_refusal = exc  # type: ignore[attr-defined]

    @extend_schema(exclude=True)  # MCP is described by tools/list, not by the OpenAPI document
    def post(self, request: Request) -> HttpResponse:
        api_key = request.auth
        assert isinstance(api_key, ApiKey)  # noqa: S101 - guaranteed by the authentication of every /v1 view
        caller = Caller(
            tenant=self.tenant(request),
            plan=self.plan(request),
            key=api_key,
            trace_id=current_trace_id(),
            request=request,
            refusal=getattr(request, "_dpp_mcp_refusal", None),
        )
        body = request._request.body
        environ = {**request.META, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        environ[ENVIRON_KEY] = caller
        status, headers, content = bridge.serve(environ)
        response = HttpResponse(content, status=status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                response[name] = value
        return response
