"""gunicorn as the API runs it (gthread, as in the Procfile, Dockerfile and compose file), on real processes.

What gunicorn refuses before Django sees it keeps gunicorn's own HTML page (docs/decisions.md, "Library
overrides"): a reverse proxy answers most of those in production; the status is the one that matters."""

from __future__ import annotations

import http.client
import socket
import time
from urllib.parse import urlsplit

import requests

from tests.processes import gunicorn, newest_log


def test_head_answers_a_gets_headers_without_a_body() -> None:
    """gunicorn drops a body sent for HEAD and logs a warning each time (RFC 9110 §9.3.2): none is sent."""
    with gunicorn(workers=1, threads=1) as base_url:
        get = requests.get(f"{base_url}/health", timeout=10)
        head = requests.head(f"{base_url}/health", timeout=10)
    log = newest_log("gunicorn")  # gunicorn has stopped: its log is whole
    assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(get.content)))
    assert head.content == b""
    assert "body bytes on a no-body response" not in log


def _raw_exchange(base_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client library would send these) and read the answer until gunicorn closes."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split(" ")[1]), headers, body


REFUSED_BY_GUNICORN = {
    "request line over its limit": (b"GET /v1/runs?cursor=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "non-ASCII bytes in the request line": (b"GET /v1/runs/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "a Content-Length that is no number": (b"GET /v1/ledger HTTP/1.1\r\nHost: x\r\nContent-Length: 6j\r\n\r\n", 400),
    "more header fields than allowed": (
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-F%d: 1\r\n" % i for i in range(120)) + b"\r\n",
        431,
    ),
}


def test_what_gunicorn_refuses_itself_gets_its_status_on_gunicorns_own_page() -> None:
    """Never reaches Django: gunicorn's status and HTML page, and the connection closed (SPEC §4.1's problem+json
    covers what the application answers; docs/decisions.md, "Library overrides")."""
    answers = {}
    with gunicorn(workers=1, threads=2) as base_url:
        for name, (request, _) in REFUSED_BY_GUNICORN.items():
            answers[name] = _raw_exchange(base_url, request)
        assert requests.get(f"{base_url}/health", timeout=10).status_code == 200  # the worker serves on
    for name, (_, expected_status) in REFUSED_BY_GUNICORN.items():
        status, headers, body = answers[name]
        assert status == expected_status, name
        assert headers["content-type"] == "text/html", name
        assert headers["connection"] == "close", name
        assert int(headers["content-length"]) == len(body), name
        assert body.startswith(b"<html>"), name


def test_an_idle_keep_alive_connection_is_still_open_after_gunicorns_old_two_seconds() -> None:
    """gunicorn.conf.py's keep-alive (75 s) applies to a gunicorn started from the project root: a client reusing
    its connection after 3 s idle gets an answer, where gunicorn's default (2 s) had closed it (a reset)."""
    with gunicorn(workers=1, threads=2) as base_url:
        address = urlsplit(base_url)
        conn = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
        try:
            conn.request("GET", "/health")
            assert conn.getresponse().read()
            first_socket = conn.sock
            time.sleep(3)
            conn.request("GET", "/health")  # http.client reconnects only if the socket was closed on its side
            response = conn.getresponse()
            assert response.status == 200
            response.read()
            assert conn.sock is first_socket  # the same connection answered
        finally:
            conn.close()
