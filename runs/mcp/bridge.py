"""The SDK's Streamable HTTP transport (ASGI) behind a WSGI adapter (a2wsgi), once per API process.

gunicorn's workers are WSGI: the transport runs on one event loop thread per process, started on the first MCP
request (after the fork: a thread does not survive one). The session manager's `run()` holds the task group the
transport needs, for the life of the process. Stateless and JSON mode: each POST is answered by one JSON body,
so any replica answers any request and no stream outlives its request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

import anyio
from a2wsgi import ASGIMiddleware
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from runs.mcp.server import build_server

_START_TIMEOUT_S = 10
_lock = threading.Lock()
_adapter: ASGIMiddleware | None = None


async def _hold(manager: StreamableHTTPSessionManager, ready: threading.Event) -> None:
    async with manager.run():
        ready.set()
        await anyio.sleep_forever()


def _start() -> ASGIMiddleware:
    # No DNS-rebinding check (security_settings=None): that guards servers on a desktop reached by a browser
    # with ambient credentials; every DPP request carries its bearer key, checked before it gets here.
    manager = StreamableHTTPSessionManager(app=build_server(), json_response=True, stateless=True)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="mcp-loop", daemon=True).start()
    ready = threading.Event()
    asyncio.run_coroutine_threadsafe(_hold(manager, ready), loop)
    if not ready.wait(_START_TIMEOUT_S):
        raise RuntimeError("the MCP session manager did not start")
    return ASGIMiddleware(manager.handle_request, loop=loop)  # type: ignore[arg-type]


def adapter() -> ASGIMiddleware:
    """This process's WSGI adapter of the MCP transport, started on first use."""
    global _adapter  # noqa: PLW0603 - one transport per process, started lazily after gunicorn's fork
    with _lock:
        if _adapter is None:
            _adapter = _start()
        return _adapter


def serve(environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answer one MCP request: (status, headers, body)."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), headers
        return lambda data: None

    chunks: Iterable[bytes] = adapter()(environ, start_response)  # type: ignore[arg-type]
    body = b"".join(chunks)
    return answer["status"], answer["headers"], body
