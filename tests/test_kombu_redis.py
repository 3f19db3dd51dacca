"""config.kombu_redis: kombu's Redis transport with one client per channel, on the real Redis of the test run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from kombu import Connection

from config.celery import REDIS_TRANSPORT, broker_transport
from config.kombu_redis import Channel


@pytest.fixture
def connection() -> Iterator[Connection]:
    with Connection(settings.REDIS_URL, transport=REDIS_TRANSPORT) as conn:
        yield conn


def test_redis_urls_select_it_and_other_brokers_keep_their_own() -> None:
    assert broker_transport("redis://127.0.0.1:6379/0") == REDIS_TRANSPORT
    assert broker_transport("rediss://cache.example:6380/0") is None  # kombu's own TLS handling
    assert broker_transport("sqs://") != REDIS_TRANSPORT  # config.kombu_sqs (tests/test_kombu_sqs.py)
    assert broker_transport("filesystem://") is None


def test_a_channel_hands_out_one_client_for_commands_and_its_own_for_the_event_loop(connection: Connection) -> None:
    channel = connection.default_channel
    assert isinstance(channel, Channel)
    first, second = channel._create_client(), channel._create_client()
    assert first is second
    assert first.connection_pool is channel.pool
    assert channel._create_client(asynchronous=True) is not first


def test_a_new_pool_gets_a_new_client(connection: Connection) -> None:
    channel = connection.default_channel
    assert isinstance(channel, Channel)
    before = channel._create_client()
    channel._pool = None  # what kombu does when it drops its pools
    after = channel._create_client()
    assert after is not before
    assert after.connection_pool is channel.pool


def test_messages_go_through_it_both_ways(connection: Connection) -> None:
    name = f"dpp-test-kombu-{uuid.uuid4().hex}"
    queue = connection.SimpleQueue(name)
    try:
        for number in range(3):
            queue.put({"n": number})
        received = []
        for _ in range(3):
            message = queue.get(timeout=5)
            received.append(message.payload["n"])
            message.ack()
        assert received == [0, 1, 2]
        with pytest.raises(queue.Empty):
            queue.get_nowait()
    finally:
        queue.clear()
        queue.close()
