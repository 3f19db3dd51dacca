"""A real local webhook receiver: a threaded HTTP server on 127.0.0.1 that records every POST and answers with
scripted statuses (the last one repeats). `hang_s` stalls every answer; `hold_first` stalls the first n requests
(recorded on arrival) until `release()` or `close()`, so that a sender can be killed while its request is in flight."""

from __future__ import annotations

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
    def __init__(self, statuses: tuple[int, ...] = (200,), *, hang_s: float = 0, hold_first: int = 0) -> None:
        self.statuses, self.hang_s, self.hold_first = list(statuses), hang_s, hold_first
        self.received: list[Received] = []
        self.answered = 0  # answers written (a request whose sender died is received, never answered)
        self._released = threading.Event()
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Buffered: the status line, headers and body leave in one segment, as from any production server.
            # Unbuffered, the body's small second write waits for the sender's delayed ACK (Nagle): ~20-40 ms
            # per delivery, measured by bench/webhooks.py.
            wbufsize = 65_536

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    index = len(receiver.received)
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                if index < receiver.hold_first:
                    receiver._released.wait(120)
                time.sleep(receiver.hang_s)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                receiver.answered += 1

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.server_address[1]}{path}"

    def release(self) -> None:
        """Let the held requests answer (or find that their sender is gone)."""
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
