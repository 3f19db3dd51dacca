"""kombu's SQS transport, with a polling loop that survives a failed ReceiveMessage (kombu 5.7.0).

A worker consumes SQS through a chain of callbacks on its event loop: each ReceiveMessage's answer schedules the
next request (`Channel._schedule_queue` → `_get_async` → `AsyncSQSConnection.receive_message` →
`_on_list_ready` → `_on_messages_ready` → `_loop1` → `_schedule_queue` …). Nothing else restarts that chain, so
anything that keeps `_loop1` from being called stops consumption for good. In kombu 5.7.0 a short SQS outage does:
when the request gets no HTTP answer (connection refused or reset, a timeout: pycurl reports code 599) or a 5xx,
`AsyncAWSQueryConnection._on_list_ready` answers `[]`, and `_on_messages_ready` calls `.get('Messages')` on it:
`AttributeError: 'list' object has no attribute 'get'`. The error skips `_loop1`, and then
- if it was raised from the HTTP client's timer, the event loop logs "Error in timer" and carries on: the worker
  stays alive but never polls again (runs stay QUEUED until it is restarted);
- if it was raised from a socket event, it leaves the event loop: Celery logs "Unrecoverable error" and exits.
Any other non-200 answer (`_on_list_ready` raises) or a failure before the request is sent (signing with
refreshed credentials, resolving the queue URL) ends the chain the same way.

So this Channel (1) reads kombu's `[]` as a failed poll, not as an answer, and (2) catches every failure of one
poll, logs it (once per outage, and again when polling works), and polls again after
`RETRY_AFTER_FAILED_POLL_S` or the polling interval, whichever is longer. A message whose delete failed during
the outage ("Couldn't ack") is released by kombu and redelivered by SQS after the visibility timeout; leasing is a
compare-and-set, so that copy is a no-op. Everything else is kombu's: selected for `sqs://` broker URLs by
`config.celery` (`broker_transport`). Re-check `_get_async` (a copy of kombu's, plus the guard) and
`_on_messages_ready` against kombu's own before changing the kombu pin (tests/test_adapters.py fails on another
kombu, or on changed sources; the behaviour is proven in tests/e2e/test_sqs_outage.py).

Upstream: no open kombu issue or PR for 5.7.0's `[]` answer reaching `.get('Messages')`. It stands in for the
long line of "worker stops consuming after an SQS error" reports — celery/kombu#931, celery/celery#3990,
celery/celery#4159 — whose fix, celery/kombu#1064 ("don't stop receiving tasks on 503 SQS error"), is the
`return []` of `_on_list_ready` that the later `_on_messages_ready` no longer accepts.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import SQS
from vine import promise, transform

from config.adapters import WrittenAgainst

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILED_POLL_S = 1.0

WRITTEN_AGAINST = WrittenAgainst(
    distribution="kombu",
    version="5.7.0",
    sources={
        "kombu.transport.SQS.Channel._get_async": "8148f68087abb1ba8714f814ea39ee76a8c558bbb9844a4aa3ada4105ff8265f",
        "kombu.transport.SQS.Channel._get_from_sqs": "226be968ffe8213dcbc1d3c67e3d4f43410f295642b988dacd0d822a74f25cb9",
        "kombu.transport.SQS.Channel._on_messages_ready": (
            "c947764eea946906ad5f5b432a98323c0df8a624f4077689eff2c5669577448e"
        ),
        "kombu.transport.SQS.Channel._schedule_queue": (
            "953f1ad1314ec406446709cee042ca90e121db109ab3d45af01d4df8b46a09f7"
        ),
        "kombu.asynchronous.aws.connection.AsyncAWSQueryConnection._on_list_ready": (
            "a04054ae42c0cb216d2c2909cad7020b091ae285164ae6a7ed15a114cfe31278"
        ),
    },
)


class PollFailedError(Exception):
    """kombu's `[]` for a ReceiveMessage without an answer (connection refused or reset, a timeout) or a 5xx."""


class Channel(SQS.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._dpp_failing_queues: set[str] = set()
        super().__init__(*args, **kwargs)

    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> Any:
        # kombu 5.7.0's `_get_async`, with the answer's handling (`_on_list_ready` included, which a guard on
        # `callback` would not see: vine drops the error handler there) and the sending guarded.
        try:
            q_url = self._new_queue(queue)
            qname = self.canonical_queue_name(queue)
            on_answer = transform(self._on_messages_ready, callback, q_url, queue)
            return self._get_from_sqs(
                queue_name=qname,
                queue_url=q_url,
                count=count,
                connection=self.asynsqs(queue=qname),
                callback=promise(on_answer, on_error=promise(self._poll_failed, (queue,))),
            )
        except Exception as exc:
            self._poll_failed(queue, exc)
            return None

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        # kombu's argument names: `queue` is the queue's URL, `qname` the name `_schedule_queue` polls.
        if isinstance(messages, list):
            raise PollFailedError("no answer from SQS (connection refused, reset or timed out) or a 5xx")
        if qname in self._dpp_failing_queues:
            self._dpp_failing_queues.discard(qname)
            logger.info("SQS: receiving from queue %s works again", qname)
        received: int = super()._on_messages_ready(queue, qname, messages)
        return received

    def _poll_failed(self, queue: str, exc: BaseException) -> None:
        delay = max(self.connection.polling_interval or 0, RETRY_AFTER_FAILED_POLL_S)
        if queue in self._dpp_failing_queues:
            logger.debug("SQS: receiving from queue %s failed again: %r", queue, exc)
        else:
            self._dpp_failing_queues.add(queue)
            logger.warning(
                "SQS: receiving from queue %s failed: %r; retrying every %.1f s",
                queue,
                exc,
                delay,
                exc_info=not isinstance(exc, PollFailedError),
            )
        if self.hub is not None:
            self.hub.call_later(delay, self._schedule_queue, queue)


class Transport(SQS.Transport):
    Channel = Channel
