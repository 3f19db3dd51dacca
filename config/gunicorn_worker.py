"""gunicorn's gthread worker, spreading new connections evenly over the worker processes.

With keep-alive, a connection stays with the worker process that accepted it, and every worker races for each new
connection. Which one wins is luck: measured on the submit benchmark, 8 connections opened at once split 6/2,
7/1, even 8/0 between 2 workers. The worker holding most of them then runs on one core under one GIL while the
other core idles, and its requests queue (p99 of a submit at c=8: 39 to 51 ms from one run to the next). Here a
worker that already holds connections lets an idler sibling take a new one first: it waits 0.5 ms per connection
it holds (at most 4 ms) before it calls accept(), which then finds the connection gone if a sibling took it.
The split became 4/4 in every run and the p99 38 to 39 ms. The wait happens only when a connection arrives, in
the event-loop thread, never in a request.

It also answers what gunicorn refuses before the application sees it (a malformed request line or header, a
request line over its limit: 400, 414, 431…) with an RFC 9457 problem instead of gunicorn's HTML page (SPEC §4.1:
every error). gunicorn still decides the status, logs the refusal and writes its access log line; only the page
it writes is replaced.
"""

from __future__ import annotations

import html
import json
import re
import socket
import time
import uuid
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

YIELD_PER_CONNECTION_S = 0.0005
MAX_YIELD_S = 0.004


def accept_delay(connections_held: int) -> float:
    """Seconds to leave a new connection to the siblings, for a worker already holding this many."""
    return min(connections_held * YIELD_PER_CONNECTION_S, MAX_YIELD_S)


# gunicorn.util.write_error's page: "HTTP/1.1 <status> <reason>" … "<h1><p><reason></p></h1> <escaped message>".
_ERROR_STATUS_RE = re.compile(rb"HTTP/1\.1 ([0-9]{3}) ")
_ERROR_MESSAGE_RE = re.compile(rb"</h1>\s*(.*?)\s*</body>", re.DOTALL)


class _KeptPage:
    """Stands for the client's socket while gunicorn writes its error page: the page is kept, not sent."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # util.write_nonblock then writes at once, without switching the real socket's blocking mode

    def sendall(self, data: bytes) -> None:
        self.data += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def problem_page(page: bytes, path: str | None) -> bytes:
    """gunicorn's HTML error page as an HTTP/1.1 problem+json response with the same status."""
    from dpp.http.problems import PROBLEM_CONTENT_TYPE, error_for_status, problem_body, problem_instance

    status_match = _ERROR_STATUS_RE.match(page)
    status = int(status_match.group(1)) if status_match else 400
    message_match = _ERROR_MESSAGE_RE.search(page)
    message = html.unescape(message_match.group(1).decode("latin-1")) if message_match else ""
    error = error_for_status(status, message or None)
    trace_id, request_id = uuid.uuid4().hex, uuid.uuid4().hex
    # A request gunicorn could not parse (a request line over its limit, too many header fields) has no path.
    instance = path or problem_instance(None, request_id)
    body = json.dumps(problem_body(error, instance=instance, trace_id=trace_id)).encode()
    reason = page.split(b"\r\n", 1)[0].split(b" ", 2)[-1].decode("latin-1") if status_match else "Bad Request"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\nX-Trace-Id: {trace_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class BalancedThreadWorker(ThreadWorker):
    def accept(self, listener: socket.socket) -> None:
        delay = accept_delay(self.nr_conns)
        if delay:
            time.sleep(delay)
        super().accept(listener)

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        kept = _KeptPage(client)
        super().handle_error(req, kept, addr, exc)
        if not kept.data:
            return  # gunicorn sent nothing (it could not)
        try:
            page = problem_page(kept.data, getattr(req, "path", None))
        except Exception:
            self.log.exception("gunicorn's error page could not be made a problem; sending it as it is")
            page = kept.data
        try:
            util.write_nonblock(client, page)
        except OSError:  # the client is gone, as gunicorn itself allows for
            self.log.debug("Failed to send error message.")
