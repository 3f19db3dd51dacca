"""Local stand-ins for the internet: recording HTTP(S) servers, canned responses, a fake resolver.

Every server listens on a loopback address (127.0.0.1, 127.0.0.2 or ::1) on a port the OS picks.
A route writes its raw response itself, so a test controls framing (Content-Length, chunked, close)
and timing (stalls, trickles) byte by byte.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[[BaseHTTPRequestHandler, "Server"], None]
CANARY_BODY = b"canary"


@dataclass(frozen=True)
class Seen:
    path: str
    host: str | None


class _HTTPServer(ThreadingHTTPServer):
    owner: Server

    def server_bind(self) -> None:
        # HTTPServer.server_bind would reverse-resolve the address (getfqdn): no DNS in tests.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up on purpose (caps, timeouts): keep the test output clean


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.seen.append(Seen(self.path, self.headers.get("Host")))
        owner.routes.get(self.path, owner.default)(self, owner)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the signature is fixed
        pass


class Server:
    """A recording HTTP server (HTTPS when given a server-side TLS context) in a daemon thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        routes: dict[str, Route] | None = None,
        default: Route | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.seen: list[Seen] = []
        self.routes = routes if routes is not None else {}
        self.default = default or respond(200, b"hello")
        self.stopping = threading.Event()  # stalled routes give up when the test ends
        server_class = type("Server", (_HTTPServer,), {"address_family": _family(host)})
        self.httpd = server_class((host, port), _Handler)
        self.httpd.owner = self
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def url(self, path: str = "/", *, scheme: str = "http", host: str | None = None) -> str:
        netloc = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{netloc}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [seen.path for seen in self.seen]

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Canaries:
    """Servers a blocked fetch must never reach: 127.0.0.2 and [::1], on the same port."""

    v4: Server
    v6: Server

    @property
    def port(self) -> int:
        return self.v4.port

    @property
    def requests(self) -> int:
        return len(self.v4.seen) + len(self.v6.seen)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --- routes ---------------------------------------------------------------------------------------


def raw_response(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    head = [f"HTTP/1.1 {status} Status"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join([*head, "Connection: close", "", ""])).encode("latin-1") + body


def respond(
    status: int = 200,
    body: bytes = b"",
    *,
    content_type: str | None = "text/plain",
    chunked: bool = False,
    headers: list[tuple[str, str]] | None = None,
) -> Route:
    """A complete response, framed by Content-Length, or by chunks of 1000 bytes."""
    extra = list(headers or [])
    if content_type is not None:
        extra.append(("Content-Type", content_type))

    def route(handler: BaseHTTPRequestHandler, server: Server) -> None:
        if not chunked:
            handler.wfile.write(raw_response(status, [*extra, ("Content-Length", str(len(body)))], body))
            return
        handler.wfile.write(raw_response(status, [*extra, ("Transfer-Encoding", "chunked")]))
        for start in range(0, len(body), 1000):
            chunk = body[start : start + 1000]
            handler.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    return route


def redirect(location: str, status: int = 302) -> Route:
    return respond(status, b"moved", headers=[("Location", location)])


def stall(handler: BaseHTTPRequestHandler, server: Server) -> None:
    """Accept the request and never answer."""
    server.stopping.wait(30)


def trickle_body(handler: BaseHTTPRequestHandler, server: Server) -> None:
    """Headers at once, then one body byte every 50 ms, for ever (a cap of time, not of bytes)."""
    handler.wfile.write(raw_response(200, [("Content-Length", "1000000")]))
    _trickle(handler, server, b"x" * 1_000_000)


def trickle_headers(handler: BaseHTTPRequestHandler, server: Server) -> None:
    """The status line and headers one byte every 50 ms (about 3 s): no single read ever waits long."""
    _trickle(handler, server, raw_response(200, [("X-Slow", "a" * 20)]))


def _trickle(handler: BaseHTTPRequestHandler, server: Server, data: bytes) -> None:
    for byte in data:
        if server.stopping.wait(0.05):
            return
        try:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
        except OSError:
            return


# --- resolver -------------------------------------------------------------------------------------


class FakeResolver:
    """A DNS stand-in: name -> answers; records every lookup. An unknown name fails like DNS does.

    ``answers`` maps a name to one list of addresses, or to a list of such lists served one per
    lookup (the last one repeats): a DNS answer that changes between lookups.
    """

    def __init__(self, answers: dict[str, list[str] | list[list[str]]], *, delay_s: float = 0) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        with self._lock:
            self.calls.append((host, port))
            count = sum(1 for name, _ in self.calls if name == host)
        if self.delay_s:
            time.sleep(self.delay_s)
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answer and isinstance(answer[0], list):
            return list(answer[min(count, len(answer)) - 1])
        return [str(address) for address in answer]

    def hosts(self) -> list[str]:
        return [host for host, _ in self.calls]
