"""kombu's Redis transport, with one client object per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` around its connection pool for every LPUSH it publishes (and
most other commands): about 50 µs of CPU each, copying redis-py's table of response callbacks — an eighth of the
cost of publishing a run's task on submit. A `redis.Redis` over a pool is thread-safe (each command takes a
connection from the pool), so the channel keeps one and hands it out. Everything else is kombu's: selected for
`redis://` broker URLs by `config.celery` (`broker_transport`); `rediss://` keeps kombu's own transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):
    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self.__dict__.get("_dpp_client")
        if client is None or client.connection_pool is not pool:  # a new pool after a reconnect: a new client
            client = super()._create_client()
            self.__dict__["_dpp_client"] = client
        return client


class Transport(redis.Transport):
    Channel = Channel
