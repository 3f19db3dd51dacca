"""A broker that accepts connections and never answers (a hung proxy, a half-open connection): every call to it is
bounded (config.celery.BROKER_SOCKET_TIMEOUT_S), so a submit still gets its receipt and /readyz says the broker is
down, instead of holding a gunicorn thread forever (found from outside: no answer within 600 s)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from runs.dispatch import publish_run
from runs.models import Run
from tests.helpers.api import submit
from tests.helpers.outages import publishing_to
from tests.helpers.personas import Persona, make_persona
from tests.helpers.states import queued_run

pytestmark = pytest.mark.django_db(transaction=True)

# Far above the bound (3 s per attempt, 3 attempts): only a call that would wait forever reaches it.
NO_ANSWER_S = 60


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in [*accepted, listener]:
            conn.close()


def _answers[T](call: Callable[[], T]) -> T:
    """call(), in a thread with its own database connection, which must return (not wait forever)."""
    outcome: list[T] = []

    def run() -> None:
        try:
            outcome.append(call())
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(NO_ANSWER_S)
    assert outcome, f"no answer within {NO_ANSWER_S} s"
    return outcome[0]


@contextlib.contextmanager
def silent_broker() -> Iterator[None]:
    with silent_server() as port, publishing_to(f"redis://127.0.0.1:{port}/0"):
        yield


@pytest.fixture
def tenant() -> Persona:
    return make_persona(plan="unlimited")


def test_a_publish_to_a_silent_broker_fails_instead_of_waiting(tenant: Persona) -> None:
    run = queued_run(tenant)
    with silent_broker():
        assert _answers(lambda: publish_run(run)) is False


def test_a_submit_gets_its_receipt_and_the_run_waits_queued(tenant: Persona) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.api_key}")

    def post() -> Any:
        return submit(client)

    with silent_broker():
        response = _answers(post)
    assert response.status_code == 202, response.content
    run = Run.objects.get(pk=response.json()["run_id"])
    assert (run.status, run.money_state) == ("QUEUED", "RESERVED")  # the reaper re-publishes it later


def test_readyz_says_the_broker_is_down(client: Any) -> None:
    with silent_broker():
        response = _answers(lambda: client.get("/readyz"))
    assert response.status_code == 503
    assert response.json()["services"]["broker"] == "down"
