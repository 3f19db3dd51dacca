"""gunicorn's gthread worker, spreading new connections evenly over the worker processes.

With keep-alive, a connection stays with the worker process that accepted it, and every worker races for each new
connection. Which one wins is luck: measured on the submit benchmark, 8 connections opened at once split 6/2,
7/1, even 8/0 between 2 workers. The worker holding most of them then runs on one core under one GIL while the
other core idles, and its requests queue (p99 of a submit at c=8: 39 to 51 ms from one run to the next). Here a
worker that already holds connections lets an idler sibling take a new one first: it waits 0.5 ms per connection
it holds (at most 4 ms) before it calls accept(), which then finds the connection gone if a sibling took it.
The split became 4/4 in every run and the p99 38 to 39 ms. The wait happens only when a connection arrives, in
the event-loop thread, never in a request.
"""

from __future__ import annotations

import socket
import time

from gunicorn.workers.gthread import ThreadWorker

YIELD_PER_CONNECTION_S = 0.0005
MAX_YIELD_S = 0.004


def accept_delay(connections_held: int) -> float:
    """Seconds to leave a new connection to the siblings, for a worker already holding this many."""
    return min(connections_held * YIELD_PER_CONNECTION_S, MAX_YIELD_S)


class BalancedThreadWorker(ThreadWorker):
    def accept(self, listener: socket.socket) -> None:
        delay = accept_delay(self.nr_conns)
        if delay:
            time.sleep(delay)
        super().accept(listener)
