"""A real local webhook receiver: a threaded HTTP server on 127.0.0.1 that records every POST and answers with
scripted statuses (the last one repeats), optionally after hanging (until the sender gives up)."""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    def __init__(self, statuses: tuple[int, ...] = (200,), *, hang_s: float = 0) -> None:
        self.statuses, self.hang_s = list(statuses), hang_s
        self.received: list[Received] = []
        self.in_flight = self.max_in_flight = 0  # requests taken and not yet answered: now, and at the most
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Buffered: the status line, headers and body leave in one segment, as from any production server.
            # Unbuffered, the body's small second write waits for the sender's delayed ACK (Nagle): ~20-40 ms
            # per delivery, measured by bench/webhooks.py.
            wbufsize = 65_536

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                receiver.count_in_flight(+1)
                try:
                    hung_up = receiver.hang(self.connection)
                finally:
                    receiver.count_in_flight(-1)
                if hung_up:
                    return
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hang(self, connection: socket.socket) -> bool:
        """Wait `hang_s` before answering, or until the sender gives up; True if it did (nobody to answer)."""
        deadline = time.monotonic() + self.hang_s
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([connection], [], [], min(left, 0.1))
            if readable and not connection.recv(1, socket.MSG_PEEK):
                return True
        return False

    def count_in_flight(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
