"""Fixtures for the url pack: servers that close themselves, loopback canaries, a connection router."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from typing import Any

import pytest

from dpp.http.outbound import client
from dpp.http.outbound.addresses import IPAddress
from tests.packs.url.servers import CANARY_BODY, Canaries, Server, respond


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    """A factory of recording servers, all closed at the end of the test."""
    started: list[Server] = []

    def start(*args: Any, **kwargs: Any) -> Server:
        server = Server(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def canaries(servers: Callable[..., Server]) -> Canaries:
    for _ in range(20):  # the v6 twin needs the v4 canary's port to be free on ::1 as well
        v4 = servers("127.0.0.2", default=respond(200, CANARY_BODY))
        try:
            v6 = servers("::1", v4.port, default=respond(200, CANARY_BODY))
        except OSError:
            continue
        return Canaries(v4, v6)
    raise RuntimeError("no port free on both 127.0.0.2 and ::1")


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch, canaries: Canaries) -> list[tuple[str, int]]:
    """Every connection the pack opens, recorded; non-loopback destinations routed to the canary.

    Loopback addresses (127/8, ::1) really exist here and are connected to as they are. Any other
    address stands for a machine on a network this sandbox does not have, so the connection goes to
    the 127.0.0.2 canary instead: if the address check were missing, the fetch would reach a live
    server, exactly as it would reach the real one in production.
    """
    real_open = client.open_connection
    calls: list[tuple[str, int]] = []

    def route(address: IPAddress, port: int, timeout: float) -> socket.socket:
        calls.append((str(address), port))
        destination = address if address.is_loopback else ip_address("127.0.0.2")
        return real_open(destination, port, timeout)

    monkeypatch.setattr(client, "open_connection", route)
    return calls
