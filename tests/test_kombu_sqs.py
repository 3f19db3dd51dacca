"""config.kombu_sqs: selected for `sqs://` broker URLs, written against kombu 5.7.0.

What it fixes — a worker that stops consuming after a short SQS outage — is proven end to end, against moto's
server and a real celery worker whose path to it is cut and restored: tests/e2e/test_sqs_outage.py.
"""

from __future__ import annotations

import kombu
from kombu import Connection

from config.celery import SQS_TRANSPORT, broker_transport
from config.kombu_sqs import Channel


def test_sqs_urls_select_it() -> None:
    assert broker_transport("sqs://") == SQS_TRANSPORT
    assert broker_transport("sqs://dummy:dummy@127.0.0.1:5123") == SQS_TRANSPORT
    with Connection("sqs://", transport=SQS_TRANSPORT) as conn:
        assert conn.transport.Channel is Channel


def test_the_pinned_kombu_is_the_one_the_fix_was_written_for() -> None:
    # Channel._get_async is a copy of kombu 5.7.0's: check it again, and whether kombu fixed _on_messages_ready's
    # handling of a failed request (then drop config/kombu_sqs.py), before moving the pin.
    assert kombu.__version__ == "5.7.0"
