"""The shared Redis client (rate limits). Short timeouts: Redis being slow must not make the API slow."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=0.25,
        socket_timeout=0.25,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def get_redis() -> redis.Redis | None:
    """The client for REDIS_URL, or None when Redis is not configured (embedded mode)."""
    url: str = settings.REDIS_URL
    return _client(url) if url else None
