"""config.adapters.kombu_sqs: selected for `sqs://` broker URLs (its pin and sources: tests/test_adapters.py).

What it fixes — a worker that stops consuming after a short SQS outage — is proven end to end, against moto's
server and a real celery worker whose path to it is cut and restored: tests/e2e/test_sqs_outage.py.
"""

from __future__ import annotations

from kombu import Connection

from config.adapters.kombu_sqs import Channel
from config.celery import SQS_TRANSPORT, broker_transport


def test_sqs_urls_select_it_and_other_brokers_keep_kombus_own() -> None:
    assert broker_transport("redis://127.0.0.1:6379/0") is None
    assert broker_transport("rediss://cache.example:6380/0") is None
    assert broker_transport("filesystem://") is None
    assert broker_transport("sqs://") == SQS_TRANSPORT
    assert broker_transport("sqs://dummy:dummy@127.0.0.1:5123") == SQS_TRANSPORT
    with Connection("sqs://", transport=SQS_TRANSPORT) as conn:
        assert conn.transport.Channel is Channel
