"""Audit F1: after a short SQS outage the worker consumes again by itself (config/adapters/kombu_sqs.py).

The worker reaches moto's SQS through a TCP relay in this process; the API, S3 and moto's state are untouched.
A run executes while the relay is down (its SQS delete fails: "Couldn't ack"), and the worker's poll fails. With
kombu 5.7.0's own SQS channel that ended the worker's polling loop: the worker stayed alive and idle, or exited,
and a run submitted after SQS came back stayed QUEUED until someone restarted the worker.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import E2E, sqs_stack
from tests.processes import free_port

pytestmark = [*E2E]

OUTAGE_S = 4


class Relay:
    """A TCP relay 127.0.0.1:port → 127.0.0.1:target in threads of this process; stop() drops every connection."""

    def __init__(self, target: int) -> None:
        self.port, self.target = free_port(), target
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again after stop()
        listener.settimeout(0.1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def relay_to(target: int) -> Iterator[Relay]:
    relay = Relay(target)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.mark.parametrize("busy_ms", [2500, 0], ids=["a-run-executing", "idle"])
def test_the_worker_consumes_again_after_its_path_to_sqs_was_cut(busy_ms: int) -> None:
    """Cut while a run executes (kombu 5.7.0 alone: "Error in timer", then idle for good) or while the worker is
    idle (kombu alone, as the audit saw it: "Unrecoverable error" and the worker exits, or idle for good)."""
    with sqs_stack() as stack:
        moto_port = int(stack.s3_endpoint.rsplit(":", 1)[1])
        tenant = stack.tenant()
        api = stack.api(tenant)
        with relay_to(moto_port) as relay:
            broker_url = stack.env["CELERY_BROKER_URL"].replace(f":{moto_port}", f":{relay.port}")
            with stack.worker(concurrency=1, CELERY_BROKER_URL=broker_url) as worker:
                assert api.wait(api.diagnostic(sleep_ms=0), timeout=20)["status"] == "COMPLETED"

                busy = api.diagnostic(sleep_ms=busy_ms) if busy_ms else None
                if busy:
                    api.wait(busy, frozenset({"PROCESSING"}), timeout=20)
                relay.stop()  # SQS unreachable for the worker (while that run executes and finishes)
                time.sleep(OUTAGE_S)
                relay.start()

                after = api.diagnostic(sleep_ms=0)
                try:
                    body = api.wait(after, timeout=15)  # no reaper here: only the same worker can take it
                except TimeoutError as stuck:
                    raise AssertionError(f"{stuck}\nworker alive: {worker.alive()}\n{worker.log()[-3000:]}") from None
                assert body["status"] == "COMPLETED", body
                assert worker.alive(), worker.log()[-3000:]
                if busy:
                    assert api.wait(busy, timeout=5)["status"] == "COMPLETED"  # its message: deleted or redelivered
                log = worker.log()
                assert "receiving from queue" in log, log[-3000:]  # the outage was seen, and survived
                assert "Error in timer" not in log
                assert "Unrecoverable error" not in log
