"""Measure: connection resets when clients reuse an idle keep-alive connection, per gunicorn keep-alive value.

    .venv/bin/python bench/keepalive.py [--keep-alive 2 75] [--clients 16] [--requests 12] [--gap 2.0]

For each keep-alive value: starts `gunicorn config.wsgi` on 127.0.0.1 (embedded mode: SQLite in a temporary
folder, no Redis), the Procfile's worker class and thread count; then `--clients` threads, each with ONE
persistent connection (http.client), send GET /health `--requests` times, idle between two requests for a gap
drawn around `--gap` seconds (±0.2 s): a client that comes back to an idle connection just as the server's
keep-alive timer closes it. Counted: requests answered, and requests that failed on a reused connection
(RemoteDisconnected, ConnectionResetError, BrokenPipeError: what a client library reports as a reset; each
client then reconnects). Bounded: clients × requests requests per value, about requests × gap seconds.
Ends with ONE line of JSON: {"<keep-alive>": {"answered": n, "resets": n}, ...}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESETS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(keep_alive: int, port: int, var_dir: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DPP_VAR_DIR=var_dir, DPP_LOG_LEVEL="warning")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    args = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi", "--bind", f"127.0.0.1:{port}"]
    args += ["--workers", "2", "--threads", "8", "--worker-class", "gthread"]
    args += ["--keep-alive", str(keep_alive), "--no-control-socket", "--log-level", "warning"]
    server = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not start")


def _client(port: int, requests: int, gap: float, counts: dict[str, int], lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    rng = random.Random()
    for number in range(requests):
        if number:
            time.sleep(max(0.0, gap + rng.uniform(-0.2, 0.2)))
        try:
            conn.request("GET", "/health")
            conn.getresponse().read()
            outcome = "answered"
        except RESETS:
            outcome = "resets"
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with lock:
            counts[outcome] += 1
    conn.close()


def measure(keep_alive: int, clients: int, requests: int, gap: float) -> dict[str, int]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as var_dir:
        server = _start(keep_alive, port, var_dir)
        try:
            counts = {"answered": 0, "resets": 0}
            lock = threading.Lock()
            threads = [
                threading.Thread(target=_client, args=(port, requests, gap, counts, lock)) for _ in range(clients)
            ]
            for thread in threads:
                thread.start()
                time.sleep(gap / clients)  # spread the clients over one gap
            for thread in threads:
                thread.join()
            return counts
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-alive", type=int, nargs="+", default=[2, 75])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--gap", type=float, default=2.0)
    options = parser.parse_args()
    results = {}
    for keep_alive in options.keep_alive:
        results[str(keep_alive)] = measure(keep_alive, options.clients, options.requests, options.gap)
        print(f"keep-alive {keep_alive} s: {results[str(keep_alive)]}", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
