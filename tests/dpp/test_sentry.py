"""Sentry is off without SENTRY_DSN; with one (here a local fake of its ingest endpoint) it starts with the Django
and Celery integrations, no personal data, and delivers there."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.processes import manage, process_env, wait_until

PROBE = (
    "import json, sentry_sdk; from django.conf import settings; c = sentry_sdk.get_client(); "
    "active = c.is_active(); "
    "print(json.dumps({'enabled': settings.SENTRY_ENABLED, 'active': active, "
    "'pii': c.options['send_default_pii'] if active else None, 'integrations': sorted(c.integrations)})); "
    "active and sentry_sdk.capture_message('probe'); active and sentry_sdk.flush(5)"
)


@pytest.fixture
def fake_sentry() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server that accepts what a Sentry client posts; yields its DSN and the paths posted to."""
    posted: list[str] = []

    class Ingest(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            posted.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_address[1]}/42", posted
    finally:
        server.shutdown()
        server.server_close()


def _probe(**env: str) -> dict[str, object]:
    done = manage(["shell", "-c", PROBE], process_env(**env), timeout=60)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_without_a_dsn_nothing_is_initialised() -> None:
    assert _probe(SENTRY_DSN="") == {"enabled": False, "active": False, "pii": None, "integrations": []}


def test_with_a_dsn_it_reports_without_personal_data(fake_sentry: tuple[str, list[str]]) -> None:
    dsn, posted = fake_sentry
    probe = _probe(SENTRY_DSN=dsn)
    assert (probe["enabled"], probe["active"], probe["pii"]) == (True, True, False)
    assert {"django", "celery"} <= set(probe["integrations"])  # type: ignore[call-overload]
    wait_until(lambda: posted, 5, what="an envelope posted")
    assert posted[0] == "/api/42/envelope/"
